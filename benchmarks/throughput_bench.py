"""The throughput benchmark's set-up: model, library, lm-eval models (hf and the ilora strategies),
routes, HFLM's encodings and batch order, and the PEFT model with one slot per composition."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from benchmarks.common import DTYPES, TARGETS, Corpus, make_library, make_model
from benchmarks.throughput_config import ThroughputConfig
from benchmarks.throughput_workload import make_requests, preset_ilora


class Bench:
    def __init__(self, cfg: ThroughputConfig, root: Path):
        self.cfg = cfg
        self.root = root
        self.log = print if cfg.verbose else (lambda *a, **k: None)
        self.dtype = cfg.model.dtype
        self.device = cfg.device
        t0 = time.perf_counter()
        self.model_dir = root / "bench-llama"
        self.lib_dir = root / "library"
        base = make_model(self.model_dir, cfg.model)
        self.corpus = Corpus(cfg.model.vocab, cfg.library, seed=cfg.seed)
        make_library(base, self.model_dir.name, self.lib_dir, self.corpus, cfg.library, cfg.rank, cfg.targets,
                     seed=cfg.seed + 100)
        del base
        self.ll_reqs, self.gen_reqs = make_requests(cfg, self.corpus)
        self.log(f"# built model + library of {cfg.library} in {time.perf_counter() - t0:.1f}s")
        want = set(cfg.methods)
        need_rf = bool(want & {"ilora:retrieve_fuse", "raw:per_row_rf", "raw:peft_rf", "raw:one_row_rf"})
        need_il = bool(want & {"ilora:ilora", "raw:peft_ilora"})
        t0 = time.perf_counter()
        self.hf = self._hflm()  # always: its encodings and model feed the raw rows
        self.lms = {}
        if "ilora:base" in want:
            self.lms["base"] = self._ilora("base")
        if need_rf:
            self.lms["retrieve_fuse"] = self._ilora("retrieve_fuse", top_k=cfg.top_k)
        if need_il:
            self.lms["ilora"] = self._ilora("ilora", top_k=cfg.per_row)
            preset_ilora(self.lms["ilora"], cfg, self.corpus)
        self.routing_times = {name: self._route(lm) for name, lm in self.lms.items() if name != "base"}
        self.library = next(iter(self.lms.values())).library if self.lms else None
        self._encode()
        self.peft = None
        if want & {"raw:peft_rf", "raw:peft_ilora", "raw:one_row_rf"}:
            self._build_peft()
        self.log(f"# loaded models in {time.perf_counter() - t0:.1f}s")

    # ------------------------------------------------------------------ models
    def _hflm(self):
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=str(self.model_dir), device=self.device, batch_size=self.cfg.batch, dtype=self.dtype)

    def _ilora(self, strategy, **kw):
        from ilora_eval.model_wrappers.ilora_lm import IloraLM

        return IloraLM(pretrained=str(self.model_dir), library=str(self.lib_dir), strategy=strategy,
                       embedder="hashing", progress=False, device=self.device, batch_size=self.cfg.batch,
                       dtype=self.dtype, **kw)

    def _route(self, lm) -> list[float]:
        """Route every document once untimed (builds the library index), then time routing from scratch
        (embedding + top-k + registering) `repeats` times; the last routes stay for the timed runs."""
        reqs = self.ll_reqs + self.gen_reqs
        lm._composition_ids(reqs)
        times = []
        for _ in range(self.cfg.repeats):
            lm.router.forget_routes()
            t0 = time.perf_counter()
            lm._composition_ids(reqs)
            times.append(time.perf_counter() - t0)
        return times

    def compositions(self, strategy: str, reqs) -> list:
        lm = self.lms[strategy]
        return [lm.state.compositions[cid] for cid in lm.router.route(reqs)]

    def cids(self, strategy: str, reqs) -> list[int]:
        lm = self.lms[strategy]
        return lm.router.route(reqs)

    def _encode(self) -> None:
        """The raw rows use HFLM's own tokenisation and its batch order (longest first)."""
        hf = self.hf
        self.ll_enc = [hf._encode_pair(*r.args) for r in self.ll_reqs]
        order = sorted(range(len(self.ll_enc)), key=lambda i: (-len(self.ll_enc[i][0] + self.ll_enc[i][1]),
                                                               tuple(self.ll_enc[i][0] + self.ll_enc[i][1])))
        b = self.cfg.batch
        self.ll_batches = [order[i : i + b] for i in range(0, len(order), b)]
        max_ctx = hf.max_length - self.cfg.gen_tokens
        self.gen_enc = [hf.tok_encode(r.args[0])[-max_ctx:] for r in self.gen_reqs]
        order = sorted(range(len(self.gen_reqs)), key=lambda i: (-len(self.gen_enc[i]), self.gen_reqs[i].args[0]))
        self.gen_batches = [order[i : i + b] for i in range(0, len(order), b)]

    def _build_peft(self) -> None:
        """One PeftModel holding a slot per distinct composition (retrieve_fuse's and ilora's) plus the
        `slot` the naive row-at-a-time method rewrites. lora_alpha = r (scaling 1): the library's B
        already carries each adapter's scaling."""
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer
        from transformers import AutoModelForCausalLM

        cfg = self.cfg
        dtype = DTYPES[self.dtype]
        base = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).to(self.device).eval()
        lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, target_modules=TARGETS[cfg.targets], lora_dropout=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = get_peft_model(base, lcfg, adapter_name="slot")
        comps = []
        for strategy in ("retrieve_fuse", "ilora"):
            if strategy in self.lms:
                comps += self.compositions(strategy, self.ll_reqs + self.gen_reqs)
        self.slot_of = {}
        for c in comps:
            if c not in self.slot_of and not c.is_base:
                self.slot_of[c] = f"c{len(self.slot_of)}"
        for name in self.slot_of.values():
            pm.add_adapter(name, lcfg)
        pm.to(dtype).eval()
        pm.set_adapter("slot")
        self.lora_layers = []  # (layer, stacked A [N,r,d_in], stacked B [N,d_out,r]) on device, model dtype
        for name, mod in pm.named_modules():
            if isinstance(mod, LoraLayer):
                stacked = self.library.modules[name.removeprefix("base_model.model.")]
                self.lora_layers.append((mod, stacked.A.to(self.device, dtype), stacked.B.to(self.device, dtype)))
        with torch.no_grad():
            for comp, slot in self.slot_of.items():
                self.write_slot(slot, comp)
        self.peft = pm
        one = self.lora_layers[0][1]
        self.slot_bytes = sum((a.shape[1] * (a.shape[2] + b.shape[1])) for _, a, b in self.lora_layers) * one.element_size()

    def write_slot(self, slot: str, comp) -> None:
        """LoraHub's A = Σ w·A_i, B = Σ w·B_i, written into a PEFT adapter slot."""
        idx = torch.tensor(comp.indices, device=self.device)
        w = torch.tensor(comp.weights, device=self.device, dtype=torch.float32)
        for layer, A, B in self.lora_layers:
            a = torch.einsum("n,nrd->rd", w, A.index_select(0, idx).float())
            b = torch.einsum("n,nor->or", w, B.index_select(0, idx).float())
            layer.lora_A[slot].weight.copy_(a)
            layer.lora_B[slot].weight.copy_(b)
