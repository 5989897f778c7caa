"""Throughput of per-document LoRA composition against the plain base model.

    python -m benchmarks.throughput --quick            # CPU, under 2 minutes
    python -m benchmarks.throughput --device cuda --dtype bfloat16 --hidden 2048 --layers 16 ...

The same lm-eval requests (loglikelihood and generate_until) go through:
  lm-eval level (`HFLM.loglikelihood` / `.generate_until`, batching and tokenisation included):
    hf                    plain `--model hf`                                   (baseline of these rows)
    ilora:base            `--model ilora strategy=base`: library injected, no adapter applied
    ilora:retrieve_fuse   a different top_k composition per document (routes pre-computed)
    ilora:ilora           the `ilora` strategy's routing over 5 fixed compositions of per_row adapters
  raw level (identical batches, fed to the model directly: no lm-eval, no stop-sequence checks):
    raw:base              the base model                                        (baseline of these rows)
    raw:per_row_rf        the per-row layer, retrieve_fuse's compositions
    raw:peft_rf           PEFT `adapter_names`, one pre-built slot per distinct composition (retrieve_fuse)
    raw:peft_ilora        PEFT `adapter_names`, 5 slots (ilora's compositions)
    raw:one_row_rf        naive: compose into one PEFT slot, run one row at a time (retrieve_fuse)
Each repeat times four blocks (lm-eval ll, lm-eval gen, raw ll, raw gen), each as [baseline, methods,
baseline]; a method's ratio is the median over repeats of its time over the mean of the two baseline
runs around it. The last printed line holds the ratios.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import (cli_main, workdir, DTYPES, TARGETS, Corpus, MemProbe, ModelSpec, machine, make_library, make_model, mb,
                               median, module_bytes, set_threads, table, tensor_bytes, timed)

TASK = "bench"
GEN_DOC_OFFSET = 100_000
LM_EVAL = ("hf", "ilora:base", "ilora:retrieve_fuse", "ilora:ilora")
RAW = ("raw:base", "raw:per_row_rf", "raw:peft_rf", "raw:peft_ilora", "raw:one_row_rf")
METHODS = LM_EVAL + RAW
BASELINE = {m: "hf" for m in LM_EVAL} | {m: "raw:base" for m in RAW}
WHAT = {
    "hf": "lm-eval `hf` (baseline)",
    "ilora:base": "lm-eval `ilora` strategy=base (library injected, unused)",
    "ilora:retrieve_fuse": "lm-eval `ilora` retrieve_fuse, one composition per doc",
    "ilora:ilora": "lm-eval `ilora` strategy=ilora, 5 compositions",
    "raw:base": "raw forward/generate, base model (baseline)",
    "raw:per_row_rf": "raw, per-row layer, retrieve_fuse compositions",
    "raw:peft_rf": "raw, PEFT adapter_names, 1 slot per doc",
    "raw:peft_ilora": "raw, PEFT adapter_names, 5 slots",
    "raw:one_row_rf": "raw, compose into 1 PEFT slot, 1 row at a time",
}


@dataclass
class ThroughputConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    library: int = 32
    rank: int = 8
    targets: str = "qv"  # qv | all
    top_k: int = 5  # retrieve_fuse adapters per document
    per_row: int = 20  # adapters in each of ilora's compositions
    compositions: int = 5  # ilora's compositions (one per adaptation example)
    docs: int = 16  # loglikelihood documents
    conts: int = 4  # continuations per document (2-4 tokens each)
    seq: int = 100  # context tokens of a loglikelihood document
    gen_docs: int = 16
    gen_seq: int = 64  # prompt tokens of a generation document
    gen_tokens: int = 16  # greedy tokens generated per document (exactly: min_new_tokens)
    until: str | None = "\n\n"  # stop sequence (None: only EOS, which min_new_tokens keeps out)
    batch: int = 16
    repeats: int = 3
    device: str = "cpu"
    threads: int | None = 2
    methods: tuple[str, ...] = METHODS
    workdir: str | None = None
    seed: int = 0
    clock: str = "wall"  # what the ratios compare: wall | cpu (process CPU time; see README)
    verbose: bool = True


QUICK = dict(docs=8, conts=4, seq=100, gen_docs=16, gen_seq=64, gen_tokens=16, batch=16, repeats=4)
QUICK_METHODS = tuple(m for m in METHODS if m != "ilora:base")  # ilora:base is a diagnostic (~1.0x)


# --------------------------------------------------------------------------- requests
def make_requests(cfg: ThroughputConfig, corpus: Corpus):
    from lm_eval.api.instance import Instance

    rng = random.Random(cfg.seed + 1)
    ll = []
    for d in range(cfg.docs):
        ctx = corpus.text(d, cfg.seq, rng=rng)
        firsts = set()
        for j in range(cfg.conts):
            while True:  # distinct first words: HFLM's one-token logits cache merges nothing
                cont = corpus.random_words(2 + j % 3, rng)
                if cont.split()[0] not in firsts:
                    firsts.add(cont.split()[0])
                    break
            ll.append(Instance("loglikelihood", {"text": ctx}, (ctx, " " + cont), j, (TASK, d, 1)))
    gen = []
    kwargs = {"until": [cfg.until] if cfg.until else [], "max_gen_toks": cfg.gen_tokens, "do_sample": False,
              "min_new_tokens": cfg.gen_tokens}
    for d in range(cfg.gen_docs):
        ctx = corpus.text(cfg.docs + d, cfg.gen_seq, rng=rng)
        gen.append(Instance("generate_until", {"text": ctx}, (ctx, dict(kwargs)), 0, (TASK, GEN_DOC_OFFSET + d, 1)))
    return ll, gen


# --------------------------------------------------------------------------- the bench
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
            self._preset_ilora(self.lms["ilora"])
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

    def _preset_ilora(self, lm) -> None:
        """What `ilora`'s fit would have learned, fixed: per adaptation example, per_row adapters with
        weights in [-1, 1]; example k's text is drawn from the topics k, k+5, ... so documents spread
        over the 5 compositions. Routing (embed docs, nearest example) is the strategy's own."""
        from ilora_eval.adaptation import TaskData

        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed + 7)
        n_topics = min(cfg.library, cfg.docs + cfg.gen_docs)
        examples, texts = [], []
        for k in range(cfg.compositions):
            idx = sorted(rng.choice(cfg.library, size=min(cfg.per_row, cfg.library), replace=False).tolist())
            examples.append({"indices": idx, "weights": rng.uniform(-1.0, 1.0, size=len(idx)).tolist()})
            texts.append(" ".join(self.corpus.text(t, 20, purity=1.0) for t in range(k, n_topics, cfg.compositions))
                         or self.corpus.text(k, 20, purity=1.0))
        lm.router.tasks[TASK] = TaskData(TASK, None, [], "none")
        lm.router.strategy.state[TASK] = {"examples": examples, "example_embeddings": lm.router.embed(texts).tolist()}

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

    # ------------------------------------------------------------------ raw execution
    @torch.no_grad()
    def raw_loglikelihood(self, model, batches, before=None, kwargs=None) -> list[float]:
        out = [0.0] * len(self.ll_enc)
        max_len = self.hf.max_length
        for b in batches:
            seqs = [(self.ll_enc[i][0] + self.ll_enc[i][1])[-(max_len + 1):][:-1] for i in b]
            inp = torch.zeros(len(b), max(map(len, seqs)), dtype=torch.long)
            for k, s in enumerate(seqs):
                inp[k, : len(s)] = torch.tensor(s)
            if before is not None:
                before(b)
            lp = F.log_softmax(model(input_ids=inp.to(self.device), **(kwargs(b) if kwargs else {})).logits, dim=-1)
            for k, i in enumerate(b):
                cont = self.ll_enc[i][1]
                n = len(seqs[k])
                out[i] = float(lp[k, n - len(cont) : n].gather(1, torch.tensor(cont, device=self.device)[:, None]).sum())
        return out

    @torch.no_grad()
    def raw_generate(self, model, batches, before=None, kwargs=None) -> list[str]:
        tok = self.hf.tokenizer
        pad = tok.pad_token_id
        out = [""] * len(self.gen_enc)
        for b in batches:
            seqs = [self.gen_enc[i] for i in b]
            width = max(map(len, seqs))
            inp = torch.full((len(b), width), pad, dtype=torch.long)
            mask = torch.zeros_like(inp)
            for k, s in enumerate(seqs):
                inp[k, width - len(s):] = torch.tensor(s)
                mask[k, width - len(s):] = 1
            if before is not None:
                before(b)
            gen = model.generate(input_ids=inp.to(self.device), attention_mask=mask.to(self.device),
                                 max_new_tokens=self.cfg.gen_tokens, min_new_tokens=self.cfg.gen_tokens,
                                 do_sample=False, pad_token_id=pad, **(kwargs(b) if kwargs else {}))
            for k, i in enumerate(b):
                out[i] = tok.decode(gen[k, width:].tolist(), skip_special_tokens=True)
        return out

    # ------------------------------------------------------------------ methods
    def jobs(self) -> dict[str, dict]:
        """method -> {"ll": fn(warmup: bool), "gen": fn(warmup: bool)}"""
        J = {}
        ll, gen = self.ll_reqs, self.gen_reqs

        def lm_eval(lm):
            return {"ll": lambda warm: [x[0] for x in lm.loglikelihood(ll[:4] if warm else ll, disable_tqdm=True)],
                    "gen": lambda warm: lm.generate_until(gen[:2] if warm else gen, disable_tqdm=True)}

        want = self.cfg.methods
        if "hf" in want:
            J["hf"] = lm_eval(self.hf)
        for name in ("base", "retrieve_fuse", "ilora"):
            if f"ilora:{name}" in want:
                J[f"ilora:{name}"] = lm_eval(self.lms[name])

        def raw(model, before_ll=None, before_gen=None, kw_ll=None, kw_gen=None, after=None):
            def run_ll(warm):
                try:
                    batches = [self.ll_batches[0][:4]] if warm else self.ll_batches
                    return self.raw_loglikelihood(model, batches, before_ll, kw_ll)
                finally:
                    after and after()

            def run_gen(warm):
                try:
                    batches = [self.gen_batches[0][:2]] if warm else self.gen_batches
                    return self.raw_generate(model, batches, before_gen, kw_gen)
                finally:
                    after and after()

            return {"ll": run_ll, "gen": run_gen}

        if "raw:base" in want:
            J["raw:base"] = raw(self.hf.model)
        if "raw:per_row_rf" in want:
            lm = self.lms["retrieve_fuse"]
            ll_c, gen_c = self.cids("retrieve_fuse", ll), self.cids("retrieve_fuse", gen)
            J["raw:per_row_rf"] = raw(lm.model, before_ll=lambda bb: lm.state.set_rows([ll_c[i] for i in bb]),
                                      before_gen=lambda bb: lm.state.set_rows([gen_c[i] for i in bb]),
                                      after=lambda: lm.state.set_rows(None))
        for method, strategy in (("raw:peft_rf", "retrieve_fuse"), ("raw:peft_ilora", "ilora")):
            if method in want:
                ll_s = [self.slot_of.get(c, "__base__") for c in self.compositions(strategy, ll)]
                gen_s = [self.slot_of.get(c, "__base__") for c in self.compositions(strategy, gen)]
                J[method] = raw(self.peft, kw_ll=lambda bb, s=ll_s: {"adapter_names": [s[i] for i in bb]},
                                kw_gen=lambda bb, s=gen_s: {"adapter_names": [s[i] for i in bb]})
        if "raw:one_row_rf" in want:
            J["raw:one_row_rf"] = self._one_row_jobs()
        return J

    def _one_row_jobs(self):
        """Rows in document order; the slot is recomposed whenever the composition changes (once per
        document), then each row runs alone, unpadded."""
        ll_c = self.compositions("retrieve_fuse", self.ll_reqs)
        gen_c = self.compositions("retrieve_fuse", self.gen_reqs)
        ll_rows = [[i] for i in sorted(range(len(self.ll_reqs)), key=lambda i: self.ll_reqs[i].doc_id)]
        gen_rows = [[i] for i in range(len(self.gen_reqs))]
        current = {"comp": None}

        def before(comps):
            def f(bb):
                c = comps[bb[0]]
                if c is not current["comp"]:
                    with torch.no_grad():
                        self.write_slot("slot", c)
                    current["comp"] = c
            return f

        def reset():
            current["comp"] = None

        def run_ll(warm):
            reset()
            return self.raw_loglikelihood(self.peft, ll_rows[:2] if warm else ll_rows, before(ll_c))

        def run_gen(warm):
            reset()
            return self.raw_generate(self.peft, gen_rows[:1] if warm else gen_rows, before(gen_c))

        return {"ll": run_ll, "gen": run_gen}

    # ------------------------------------------------------------------ bookkeeping
    def clear_caches(self) -> None:
        from ilora_eval.composition import composed_modules

        for lm in self.lms.values():
            for m in composed_modules(lm.model):
                m.clear_cache()

    def cache_bytes(self, strategy: str) -> int:
        from ilora_eval.composition import composed_modules

        mods = composed_modules(self.lms[strategy].model)
        return tensor_bytes(t for m in mods for f in m._cache.values() for t in f)

    def library_bytes(self) -> int:
        from ilora_eval.composition import composed_modules

        if not self.lms:
            return 0
        lm = next(iter(self.lms.values()))
        return tensor_bytes(t for m in composed_modules(lm.model) for t in (m.lora_A, m.lora_B))

    def resident_bytes(self, method: str) -> int:
        """Bytes a method keeps resident: its model's parameters and buffers (the stacked library is a
        buffer of the ilora models), the per-row layer's composition caches, and for PEFT the base
        model plus only the slots that method uses (the library is not needed once they are written)."""
        base = module_bytes(self.hf.model)
        if method in ("hf", "raw:base"):
            return base
        if method.startswith("ilora:") or method == "raw:per_row_rf":
            strategy = "retrieve_fuse" if method == "raw:per_row_rf" else method.split(":")[1]
            return module_bytes(self.lms[strategy].model) + self.cache_bytes(strategy)
        if method == "raw:one_row_rf":  # composes from the stacked library on the device
            return base + self.slot_bytes + tensor_bytes(t for _, a, b in self.lora_layers for t in (a, b))
        strategy = "retrieve_fuse" if method == "raw:peft_rf" else "ilora"
        used = {self.slot_of[c] for c in self.compositions(strategy, self.ll_reqs + self.gen_reqs) if c in self.slot_of}
        return base + len(used) * self.slot_bytes


# --------------------------------------------------------------------------- run
@dataclass
class Result:
    cfg: ThroughputConfig
    times: dict  # (method, kind) -> [{"wall": s, "cpu": s}] per run
    paired: dict  # (method, kind) -> [{"wall": r, "cpu": r}]: per repeat, against that repeat's baseline
    peaks: dict  # (method, kind) -> [transient bytes]
    resident: dict  # method -> bytes
    outputs: dict  # method -> {"ll": [...], "gen": [...]}
    routing: dict  # strategy -> [seconds]
    library_bytes: int
    n_compositions: dict
    agreement: list
    text: str = ""
    ratio_line: str = ""

    def seconds(self, method: str, kind: str, clock: str | None = None) -> float | None:
        return median([t[clock or self.cfg.clock] for t in self.times.get((method, kind), [])])

    def ratio(self, method: str, kind: str, baseline: str, clock: str | None = None) -> float | None:
        """Median over repeats of (method's time / the mean of the baseline runs just before and after
        that repeat's block), so drifting machine load cancels."""
        if method == baseline:
            return 1.0 if (method, kind) in self.times else None
        assert baseline == BASELINE[method], (method, baseline)
        return median([r[clock or self.cfg.clock] for r in self.paired.get((method, kind), [])])

    def peak(self, method: str) -> int | None:
        ps = [p for k in ("ll", "gen") for p in self.peaks.get((method, k), []) if p is not None]
        return self.resident[method] + max(ps) if ps and method in self.resident else None


def run(cfg: ThroughputConfig) -> Result:
    set_threads(cfg.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    with workdir(cfg.workdir, "ilora-bench-") as root:
        return measure(Bench(cfg, root))


def measure(bench: Bench) -> Result:
    """Each repeat runs four blocks (lm-eval ll, lm-eval gen, raw ll, raw gen); a block is
    [baseline, its methods in an order rotated per repeat, baseline]."""
    cfg = bench.cfg
    jobs = bench.jobs()
    probe = MemProbe(cfg.device)
    times, paired, peaks, outputs, resident = {}, {}, {}, {}, {}
    t0 = time.perf_counter()
    for m in jobs:  # warm-up on a few rows: first-call costs stay out of the memory and time figures
        for k in ("ll", "gen"):
            bench.clear_caches()
            jobs[m][k](True)
    # untimed pass over all requests: measures each method's peak memory (the probe trims the heap
    # first, which would slow timed runs) and keeps its outputs for the agreement table
    for m in jobs:
        for k in ("ll", "gen"):
            bench.clear_caches()
            _, peak, out = timed(lambda: jobs[m][k](False), cfg.device, probe)
            peaks[(m, k)] = [peak]
            outputs.setdefault(m, {})[k] = out
            resident[m] = max(resident.get(m, 0), bench.resident_bytes(m))
    bench.log(f"# warm-up + memory pass {time.perf_counter() - t0:.1f}s")

    def one(m, k, first):
        bench.clear_caches()  # composition caches start cold, as on a run's first pass
        dt, _, _ = timed(lambda: jobs[m][k](False), cfg.device)
        times.setdefault((m, k), []).append(dt)
        return dt

    blocks = []
    for level, baseline in (("lm-eval", "hf"), ("raw", "raw:base")):
        members = [m for m in jobs if BASELINE[m] == baseline and m != baseline]
        for k in ("ll", "gen"):
            blocks.append((baseline if baseline in jobs else None, members, k))
    for rep in range(cfg.repeats):
        t0 = time.perf_counter()
        for baseline, members, k in blocks[rep % len(blocks):] + blocks[: rep % len(blocks)]:
            shift = rep % max(1, len(members))
            before = one(baseline, k, rep == 0) if baseline else None
            got = {m: one(m, k, rep == 0) for m in members[shift:] + members[:shift]}
            after = one(baseline, k, False) if baseline else None
            if baseline:
                for m, dt in got.items():
                    paired.setdefault((m, k), []).append(
                        {c: dt[c] / max(1e-12, (before[c] + after[c]) / 2) for c in ("wall", "cpu")})
        bench.log(f"# repeat {rep + 1}/{cfg.repeats}: {time.perf_counter() - t0:.1f}s")
    n_comp = {}
    for s in ("retrieve_fuse", "ilora"):
        if s in bench.lms:
            n_comp[s] = len({c for c in bench.compositions(s, bench.ll_reqs + bench.gen_reqs)})
    res = Result(cfg, times, paired, peaks, resident, outputs, bench.routing_times, bench.library_bytes(), n_comp,
                 agreement(outputs))
    res.text, res.ratio_line = report(res, bench)
    return res


# --------------------------------------------------------------------------- checks and report
PAIRS = [
    ("hf", "ilora:base", "same model, no adapter"),
    ("hf", "raw:base", "lm-eval vs raw batching"),
    ("ilora:retrieve_fuse", "raw:per_row_rf", "per-row layer via lm-eval vs raw"),
    ("ilora:retrieve_fuse", "raw:peft_rf", "per-row layer vs PEFT adapter_names"),
    ("ilora:retrieve_fuse", "raw:one_row_rf", "per-row layer vs one row at a time"),
    ("ilora:ilora", "raw:peft_ilora", "ilora's 5 compositions vs PEFT adapter_names"),
    ("hf", "ilora:retrieve_fuse", "adapters change the outputs (must differ)"),
]


def agreement(outputs: dict) -> list[dict]:
    rows = []
    for a, b, what in PAIRS:
        if a in outputs and b in outputs:
            da, db = outputs[a], outputs[b]
            diff = max(abs(x - y) for x, y in zip(da["ll"], db["ll"]))
            same = sum(x == y for x, y in zip(da["gen"], db["gen"]))
            rows.append({"a": a, "b": b, "what": what, "ll_max_abs_diff": diff, "gen_equal": same,
                         "gen_total": len(da["gen"])})
    return rows


def report(res: Result, bench: Bench) -> tuple[str, str]:
    cfg = res.cfg
    s = cfg.model.resolved()
    lines = [
        f"## throughput: Llama h{s.hidden}×{s.layers} layers (heads {s.heads}/{s.kv_heads}, ffn {s.intermediate}), "
        f"vocab {s.vocab}, {cfg.model.dtype}, {cfg.device}; library {cfg.library} × rank {cfg.rank} on {cfg.targets}",
        f"loglikelihood: {len(bench.ll_reqs)} requests ({cfg.docs} docs × {cfg.conts} continuations, ~{cfg.seq}-token "
        f"contexts), batch {cfg.batch}; generate_until: {len(bench.gen_reqs)} docs, {cfg.gen_seq}-token prompts, "
        f"{cfg.gen_tokens} greedy tokens; retrieve_fuse top_k={cfg.top_k} ({res.n_compositions.get('retrieve_fuse')} "
        f"distinct compositions), ilora {cfg.compositions} compositions × {cfg.per_row} adapters "
        f"({res.n_compositions.get('ilora')} used); median of {cfg.repeats} repeats, ratios on {cfg.clock} time; "
        f"{machine()}",
        "",
    ]
    lib = res.library_bytes
    hf_peak = res.peak("hf")
    c = cfg.clock
    headers = ["method", "what", f"ll s ({c})", "ll ×", f"gen s ({c})", "gen ×",
               f"× ll / gen ({'wall' if c == 'cpu' else 'cpu'})", "resident MB", "transient tensor peak MB (ll/gen)",
               "peak MB", "peak / (hf peak + library)"]
    rows = []
    for m in [m for m in METHODS if (m, "ll") in res.times]:
        base = "hf" if m in LM_EVAL else "raw:base"
        pk = res.peak(m)
        tr = [max((p for p in res.peaks[(m, k)] if p is not None), default=None) for k in ("ll", "gen")]
        other = "wall" if cfg.clock == "cpu" else "cpu"
        rows.append([m, WHAT[m], res.seconds(m, "ll"), res.ratio(m, "ll", base),
                     res.seconds(m, "gen"), res.ratio(m, "gen", base),
                     f"{res.ratio(m, 'll', base, other):.2f} / {res.ratio(m, 'gen', base, other):.2f}",
                     mb(res.resident.get(m)),
                     "/".join("—" if t is None else f"{mb(t):.1f}" for t in tr), mb(pk),
                     None if pk is None or hf_peak is None else pk / (hf_peak + (0 if m in ("hf", "raw:base") else lib))])
    lines.append(table(headers, rows))
    lines.append("")
    lines.append(f"stacked library: {mb(lib):.2f} MB; base model: {mb(res.resident.get('hf', 0)):.2f} MB. "
                 "× columns: lm-eval rows against `hf`, raw rows against `raw:base`.")
    if res.routing:
        n_docs = len({r.doc_id for r in bench.ll_reqs + bench.gen_reqs})
        lines.append("")
        lines.append(table(["routing (untimed above)", "documents", "s (median)"],
                           [[f"{k}: embed docs (hashing) + top-k + register", n_docs, median(v)]
                            for k, v in res.routing.items()]))
    if res.agreement:
        lines.append("")
        lines.append(table(["agreement", "", "max abs Δ loglikelihood", "equal generations"],
                           [[f"{r['a']} vs {r['b']}", r["what"], r["ll_max_abs_diff"], f"{r['gen_equal']}/{r['gen_total']}"]
                            for r in res.agreement]))
    lines.append("")
    lines.append(targets_line(res))

    def pair(m, base, label):
        if (m, "ll") not in res.times or (base, "ll") not in res.times:
            return None
        return f"{label} ll {res.ratio(m, 'll', base):.2f}x gen {res.ratio(m, 'gen', base):.2f}x"

    parts = [pair("ilora:retrieve_fuse", "hf", "retrieve_fuse"), pair("ilora:ilora", "hf", "ilora"),
             pair("ilora:base", "hf", "ilora(base)")]
    raw_parts = [pair("raw:per_row_rf", "raw:base", "per_row"),
                 pair("raw:peft_rf", "raw:base", f"peft_adapter_names({res.n_compositions.get('retrieve_fuse')} slots)"),
                 pair("raw:peft_ilora", "raw:base", "peft_adapter_names(5 slots)"),
                 pair("raw:one_row_rf", "raw:base", "one_row")]
    mem = [f"{m.split(':')[1]} {res.peak(m) / (hf_peak + lib):.2f}x" for m in ("ilora:retrieve_fuse", "ilora:ilora")
           if res.peak(m) is not None and hf_peak]
    line = f"ratios vs hf ({cfg.clock} time): " + " | ".join(p for p in parts if p)
    if any(raw_parts):
        line += " || vs raw base forward: " + " | ".join(p for p in raw_parts if p)
    if mem:
        line += " || peak memory vs hf+library: " + " ".join(mem)
    return "\n".join(lines), line


def targets_line(res: Result) -> str:
    checks = []
    for m in ("ilora:retrieve_fuse", "ilora:ilora"):
        for k, limit in (("ll", 1.15), ("gen", 1.2)):
            r = res.ratio(m, k, "hf")
            if r is not None:
                checks.append(f"{m.split(':')[1]} {k} {r:.2f}x ≤ {limit} {'ok' if r <= limit else 'MISSED'}")
        pk, hf_peak = res.peak(m), res.peak("hf")
        if pk is not None and hf_peak:
            r = pk / (hf_peak + res.library_bytes)
            checks.append(f"{m.split(':')[1]} memory {r:.2f}x ≤ 1.10 {'ok' if r <= 1.10 else 'MISSED'}")
    return "targets: " + "; ".join(checks) if checks else "targets: (hf and ilora rows not run)"


# --------------------------------------------------------------------------- CLI
FULL = dict(docs=16, conts=4, seq=100, gen_docs=16, gen_seq=64, gen_tokens=16, batch=16, repeats=3)


def parse(argv=None) -> ThroughputConfig:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"CPU setting, about a minute: {QUICK}, 1 thread, CPU-time ratios (explicit flags win)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--intermediate", type=int)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--library", type=int, default=32, help="adapters in the library (N)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", choices=sorted(TARGETS), default="qv", help="qv: q_proj,v_proj; all: every linear")
    p.add_argument("--top-k", type=int, default=5, help="retrieve_fuse adapters per document")
    p.add_argument("--per-row", type=int, default=20, help="adapters in each ilora composition")
    p.add_argument("--compositions", type=int, default=5)
    for name, help_ in (("docs", "loglikelihood documents"), ("conts", "continuations per document"),
                        ("seq", "loglikelihood context tokens"), ("gen-docs", "generation documents"),
                        ("gen-seq", "generation prompt tokens"), ("gen-tokens", "greedy tokens per document"),
                        ("batch", "batch size (HFLM's, and the raw rows')"), ("repeats", "timed repeats")):
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", type=int, help=f"{help_} (default {FULL[key]}, --quick {QUICK[key]})")
    p.add_argument("--until", default="\n\n", help="stop sequence ('' for none)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 with --quick, else 2; 0: torch's default). On a shared "
                        "machine 2 threads make timings swing 3-8x (see README)")
    p.add_argument("--clock", choices=("wall", "cpu"),
                   help="time the ratios compare (default: cpu on a 1-thread CPU run, else wall)")
    p.add_argument("--methods", help="comma-separated subset of " + ",".join(METHODS) +
                   " (default: all; --quick leaves out ilora:base)")
    p.add_argument("--workdir", help="keep the built model/library here (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sizes = {k: getattr(a, k) if getattr(a, k) is not None else (QUICK if a.quick else FULL)[k] for k in FULL}
    threads = (a.threads if a.threads is not None else 1 if a.quick else 2) or None
    clock = a.clock or ("cpu" if a.device == "cpu" and threads == 1 else "wall")
    spec = ModelSpec(hidden=a.hidden, layers=a.layers, vocab=a.vocab, heads=a.heads, kv_heads=a.kv_heads,
                     intermediate=a.intermediate, dtype=a.dtype, seed=a.seed,
                     max_positions=max(2048, sizes["seq"] + 16, sizes["gen_seq"] + sizes["gen_tokens"] + 16))
    return ThroughputConfig(model=spec, library=a.library, rank=a.rank, targets=a.targets, top_k=a.top_k,
                            per_row=min(a.per_row, a.library), compositions=a.compositions, until=a.until or None,
                            device=a.device, threads=threads, clock=clock,
                            methods=tuple(m for m in a.methods.split(",") if m) if a.methods else
                            QUICK_METHODS if a.quick else METHODS, workdir=a.workdir, seed=a.seed,
                            **sizes)


def main(argv=None) -> Result:
    return cli_main(run, parse, argv)


if __name__ == "__main__":
    main()
