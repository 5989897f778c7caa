"""`--model ilora`: HFLM plus a LoRA library composed per document.

How a document's composition reaches the forward pass without re-implementing HFLM's batching:
- loglikelihood / loglikelihood_rolling: each request's context tokens are prefixed with one tag
  token `-(composition id + 1)`. HFLM sorts, groups and batches the tagged token lists as usual
  (so its one-token logits cache can only merge requests of the SAME composition), and
  `_model_call` strips the tag column into the per-row composition ids.
- generate_until: contexts are `TaggedContext` strings (a `str` carrying the id), which HFLM
  passes untouched to `tok_batch_encode`; `_model_generate` applies the recorded ids.
Requests with different compositions therefore share batches, and results come back in order.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ilora_eval.adaptation import TaskData, live_tasks, load_tasks, task_data
from ilora_eval.composition import CompositionState, inject
from ilora_eval.errors import IloraError, install_excepthook
from ilora_eval.scoring import TargetScorer
from ilora_eval.strategies.base import StrategyEnv
from ilora_eval.strategies.registry import build_config, strategy_arg_names, strategy_class

install_excepthook()

# HFLM passes unknown keyword arguments to from_pretrained; these are the ones we let through.
FROM_PRETRAINED_KWARGS = {
    "attn_implementation", "low_cpu_mem_usage", "device_map", "quantization_config", "load_in_8bit",
    "load_in_4bit", "cache_dir", "token", "local_files_only", "use_safetensors", "torch_dtype",
}


CACHE_STAMP = "__ilora_configuration__"


class TaggedContext(str):
    """A generation context that remembers its composition id."""

    cid: int

    def __new__(cls, text: str, cid: int):
        obj = super().__new__(cls, text)
        obj.cid = cid
        return obj


class _GenRequest:
    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args


@register_model("ilora")
class IloraLM(HFLM):
    _tag_slack = 0  # 1 while tagged token lists are scored: the tag is not a model position
    _detecting = False

    def __init__(self, pretrained, library: str | None = None, strategy: str = "ilora", embedder: str | None = None,
                 composition: str = "param", exclude: str | None = None, routing_log: str | None = None,
                 include_path: str | None = None, check_base: bool = True, progress: bool = True,
                 fit_cache: str | None = None, **kwargs):
        hflm_args = set(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}
        own_strategy_args = {k: kwargs.pop(k) for k in list(kwargs) if k in strategy_arg_names()}
        self.strategy_config = build_config(strategy, own_strategy_args)
        if own_strategy_args:
            raise IloraError(f"{', '.join(sorted(own_strategy_args))} is not an argument of strategy={strategy}; "
                             f"its arguments are {', '.join(sorted(asdict(self.strategy_config)))}")
        unknown = sorted(k for k in kwargs if k not in hflm_args and k not in FROM_PRETRAINED_KWARGS)
        if unknown:
            raise IloraError(f"unknown model argument(s) {', '.join(unknown)} for --model ilora; see the README's "
                             "model_args table (strategy arguments go with their strategy)")
        if kwargs.get("peft") or kwargs.get("delta"):
            raise IloraError("peft=/delta= cannot be combined with --model ilora; put the adapter in a library folder "
                             "and use strategy=single_best/uniform, or use --model hf")
        if library is None and strategy != "base":
            raise IloraError(f"strategy={strategy} needs library=<folder of PEFT LoRA adapters or manifest>")
        self.strategy_name = strategy
        self.composition_mode = composition
        self.exclude = exclude
        self.routing_log_path = routing_log
        self.include_paths = [p for p in (include_path or "").split(":") if p]
        self.progress = _as_bool(progress)
        self.pretrained_name = pretrained
        self.library = None
        super().__init__(pretrained=pretrained, **kwargs)
        self._cpu_data_parallel()

        from ilora_eval.library import LoraLibrary

        forced = strategy_class(strategy).composition_mode
        if forced and composition not in ("param", forced):
            raise IloraError(f"strategy={strategy} routes per token and needs composition={forced}, not {composition}")
        self.composition_mode = composition = forced or composition
        self.state = CompositionState(mode=composition)
        if forced == "arrow":
            self.state.arrow_k = self.strategy_config.arrow_k
            self.state.arrow_temperature = self.strategy_config.arrow_temperature
        self.library = None
        if library is not None:
            check = pretrained if _as_bool(check_base) and isinstance(pretrained, str) else None
            self.library = LoraLibrary.open(library, exclude=exclude, check_base=check)
            self.library_spec = str(library)
            inject(self._model, self.library, self.state)
        self._embedder_name = embedder
        self._embedder = None
        self._embed_cache: dict[str, object] = {}
        ids = self.library.ids if self.library is not None else []
        env = StrategyEnv(ids=ids, centroids=self._centroids, embed=self._embed,
                          score=TargetScorer(self, self.state), progress=self.progress and self.rank == 0,
                          cache=self._fit_cache(fit_cache, pretrained, strategy))
        self.strategy = strategy_class(strategy)(self.strategy_config, env)
        self._tasks: dict[str, TaskData] = {}
        self._routes: dict[tuple, tuple[int, object]] = {}
        self._route_records: list[dict] = []

    def _cpu_data_parallel(self) -> None:
        """HFLM shards documents only across several GPUs; under `torchrun --nproc_per_node N`
        on CPU every process would evaluate everything as rank 0. Shard on CPU too, with plain
        torch.distributed (gloo) collectives in place of accelerate's."""
        import torch.distributed as dist

        self._cpu_dist = False
        if self.world_size > 1 or self.device.type != "cpu" or int(os.environ.get("WORLD_SIZE", "1")) < 2:
            return
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        self._rank, self._world_size, self._cpu_dist = dist.get_rank(), dist.get_world_size(), True

    def all_gather(self, tensor):
        if not getattr(self, "_cpu_dist", False):
            return super().all_gather(tensor)
        import torch.distributed as dist

        flat = tensor.reshape(1) if tensor.dim() == 0 else tensor
        out = [torch.zeros_like(flat) for _ in range(self.world_size)]
        dist.all_gather(out, flat)
        return torch.cat(out)

    def barrier(self):
        if not getattr(self, "_cpu_dist", False):
            return super().barrier()
        import torch.distributed as dist

        dist.barrier()

    def _all_gather_objects(self, obj) -> list:
        if getattr(self, "_cpu_dist", False):
            import torch.distributed as dist

            out = [None] * self.world_size
            dist.all_gather_object(out, obj)
            return out
        from accelerate.utils import gather_object

        return gather_object([obj])

    def _broadcast_object(self, obj):
        if getattr(self, "_cpu_dist", False):
            import torch.distributed as dist

            holder = [obj]
            dist.broadcast_object_list(holder, src=0)
            return holder[0]
        from accelerate.utils import broadcast_object_list

        holder = [obj]
        broadcast_object_list(holder, from_process=0)
        return holder[0]

    # ------------------------------------------------------------ strategy plumbing
    def _fit_cache(self, setting, pretrained, strategy):
        """fit_cache=<dir> | false; default ~/.cache/ilora-eval/fits (ILORA_EVAL_CACHE)."""
        from ilora_eval.fit_cache import FitCache, default_cache_dir

        if setting is not None and str(setting).lower() in ("false", "0", "no", "off"):
            return None
        context = {
            "library_hash": self.library.content_hash if self.library is not None else None,
            "strategy": strategy, "args": asdict(self.strategy_config), "embedder": self._embedder_name or "default",
            "pretrained": str(pretrained), "revision": getattr(self, "revision", None),
            "composition": self.composition_mode, "dtype": str(self._model.dtype),
        }
        return FitCache(setting or default_cache_dir(), context)

    def _load_embedder(self):
        if self._embedder is None:
            from ilora_eval.embeddings import load_embedder

            self._embedder = load_embedder(self._embedder_name, device="cpu")
        return self._embedder

    def _embed(self, texts: list[str]):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self._embed_cache]
        if missing:
            for t, e in zip(missing, self._load_embedder().encode(missing)):
                self._embed_cache[t] = e
        return np.stack([self._embed_cache[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def _centroids(self):
        from ilora_eval.library_index import INDEX_JSON, load_centroids

        embedder = self._load_embedder()
        if self.world_size > 1:  # rank 0 builds a missing index; every rank waits (one barrier each)
            if self.rank == 0 and not (self.library.index_dir / INDEX_JSON).is_file():
                load_centroids(self.library, embedder)
            self.barrier()
        return load_centroids(self.library, embedder)

    def _ensure_fitted(self, requests) -> None:
        # All tasks of the run are fitted together at the first request (their searches run in
        # lock-step), from the evaluator's own Task objects: the same list on every rank.
        tasks = live_tasks()
        if tasks is not None:
            names = sorted(tasks)
        else:
            tasks = {}
            names = sorted({r.task_name for r in requests if r.task_name})
            if self.world_size > 1:
                names = sorted(set().union(*self._all_gather_objects(names)))
        new = [n for n in names if n not in self._tasks]
        if new:
            missing = [n for n in new if n not in tasks]
            if missing and self.strategy.needs_examples:
                tasks = {**tasks, **load_tasks(missing, self.include_paths)}
            n_adapt = getattr(self.strategy_config, "n_adapt", 5)
            for n in new:
                task = tasks.get(n)
                self._tasks[n] = task_data(n, task, n_adapt, self.strategy_config.seed) if task is not None else TaskData(n, None, [], "none")
            self.strategy.fit([self._tasks[n] for n in new])
            cache = self.strategy.env.cache
            if cache is not None and cache.hits and self.rank == 0:
                print(f"ilora-eval: reused learned weights of {cache.hits} task(s) from {cache.dir} "
                      f"({cache.misses} computed)", file=sys.stderr)
        if self.world_size > 1 and self.strategy.learned:
            # every rank learned the same thing from the same seed; rank 0's copy removes any float
            # nondeterminism between devices
            self.strategy.state = self._broadcast_object(self.strategy.state)

    def _composition_ids(self, requests) -> list[int]:
        self._ensure_fitted(requests)
        pending = defaultdict(list)
        for r in requests:
            key = (r.task_name, r.doc_id)
            if key not in self._routes and key not in {k for k, _ in pending[r.task_name]}:
                data = self._tasks.get(r.task_name) or TaskData(str(r.task_name), None, [], "none")
                pending[r.task_name].append((key, data.doc_text(r.doc, r.args[0])))
        for task_name, items in pending.items():
            data = self._tasks.get(task_name) or TaskData(str(task_name), None, [], "none")
            routings = self.strategy.route(data, [text for _, text in items])
            for (key, _), routing in zip(items, routings):
                cid = self.state.register(routing.composition)
                self._routes[key] = (cid, routing)
                self._route_records.append(self._record(key, routing))
        return [self._routes[(r.task_name, r.doc_id)][0] for r in requests]

    def _record(self, key, routing) -> dict:
        ids = self.library.ids if self.library is not None else []
        comp = routing.composition
        return {"task": key[0], "doc_id": key[1], "example": routing.example,
                "adapters": [ids[i] for i in comp.indices], "weights": [round(w, 6) for w in comp.weights]}

    # ------------------------------------------------------------ lm-eval request types
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        cids = self._composition_ids(requests)
        new_reqs = []
        for req, cid in zip(requests, cids):
            context, continuation = req.args
            if context == "":
                cont = self.tok_encode(continuation, add_special_tokens=False)
                ctx, cont = ([self.prefix_token_id], cont) if not cont or self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
            elif continuation == "":
                ctx, cont = self.tok_encode(context), []
            else:
                ctx, cont = self._encode_pair(context, continuation)
            new_reqs.append(((context, continuation), self._tag(ctx, cont, cid), cont))
        # an empty continuation has probability 1; HFLM would assert on it
        scored = [i for i, r in enumerate(new_reqs) if r[2]]
        out = [(0.0, True)] * len(new_reqs)
        for i, res in zip(scored, self._tagged_loglikelihood([new_reqs[i] for i in scored], disable_tqdm)):
            out[i] = res
        self._write_routing_log()
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        cids = self._composition_ids(requests)
        windows, owners = [], []
        for i, (req, cid) in enumerate(zip(requests, cids)):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(req.args[0]), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, self._tag(ctx, cont, cid), cont))
                owners.append(i)
        scores = self._tagged_loglikelihood(windows, disable_tqdm)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owners, scores):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        self._write_routing_log()
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False):
        cids = self._composition_ids(requests)
        tagged = [_GenRequest((TaggedContext(r.args[0], cid), *r.args[1:])) for r, cid in zip(requests, cids)]
        out = super().generate_until(tagged, disable_tqdm=disable_tqdm)
        self._write_routing_log()
        return out

    # ------------------------------------------------------------ tagging
    def _tag(self, ctx: list[int], cont: list[int], cid: int) -> list[int]:
        """Truncate as HFLM would (keeping the tag), then prefix the composition tag."""
        limit = self.max_length
        if self.backend == "causal":
            if len(ctx) + len(cont) > limit + 1:
                ctx = ctx[-max(1, limit + 1 - len(cont)):]
        else:
            ctx = ctx[-limit:]
        return [-(cid + 1), *ctx]

    def _tagged_loglikelihood(self, reqs, disable_tqdm):
        self._tag_slack = 1
        try:
            return self._loglikelihood_tokens(reqs, disable_tqdm=disable_tqdm)
        finally:
            self._tag_slack = 0

    @property
    def max_length(self) -> int:
        return HFLM.max_length.fget(self) + self._tag_slack

    def _model_call(self, inps, attn_mask=None, labels=None):
        if self._detecting:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        tags = inps[:, 0]
        if not bool((tags < 0).all()):
            raise IloraError("internal: a forward pass reached the model without composition tags")
        self.state.set_rows((-tags - 1).cpu())
        try:
            logits = super()._model_call(inps[:, 1:], attn_mask=None if attn_mask is None else attn_mask[:, 1:],
                                         labels=labels)
        finally:
            self.state.set_rows(None)
        # causal logits come back one position shorter than the tagged input; HFLM reads the
        # continuation at `inplen + (len(logits) - padded len)`, which absorbs exactly that shift
        return logits

    def tok_batch_encode(self, strings, *args, **kwargs):
        if strings and all(isinstance(s, TaggedContext) for s in strings):
            self._gen_rows = [s.cid for s in strings]
        return super().tok_batch_encode(list(map(str, strings)), *args, **kwargs)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        rows = getattr(self, "_gen_rows", None)
        if rows is None or len(rows) != context.shape[0]:
            raise IloraError("internal: generation reached the model without composition ids")
        self.state.set_rows(rows)
        try:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        finally:
            self.state.set_rows(None)
            self._gen_rows = None

    def _detect_batch_size(self, requests=None, pos: int = 0):
        self._detecting = True
        try:
            return super()._detect_batch_size(requests, pos)
        finally:
            self._detecting = False

    # ------------------------------------------------------------ lm-eval's --use_cache
    def set_cache_hook(self, cache_hook) -> None:
        """lm-eval's request cache keys only on request text: one cache file must serve one
        configuration, or results of different strategies would be mixed. Stamp and check it."""
        db = getattr(cache_hook, "dbdict", None)
        if db is not None:
            fingerprint = json.dumps({
                "pretrained": str(self.pretrained_name), "library_hash": self.library.content_hash if self.library else None,
                "strategy": self.strategy_name, "args": asdict(self.strategy_config),
                "composition": self.composition_mode, "embedder": self._embedder_name or "default"}, sort_keys=True)
            stamp = db.get(CACHE_STAMP)
            if stamp is None and len(db) > 0:
                raise IloraError(f"--use_cache file {getattr(db, 'filename', '')} already holds results of another model; "
                                 "give each ilora configuration its own --use_cache path")
            if stamp is not None and stamp != fingerprint:
                raise IloraError(f"--use_cache file {getattr(db, 'filename', '')} holds results of another ilora configuration "
                                 f"({stamp}); give each strategy/configuration its own --use_cache path")
            db[CACHE_STAMP] = fingerprint
        super().set_cache_hook(cache_hook)

    # ------------------------------------------------------------ reporting
    def get_model_info(self) -> dict:
        info = super().get_model_info()
        routed = Counter((r["task"], r["example"]) for r in self._route_records)
        info.update({
            "ilora_strategy": self.strategy_name,
            "ilora_args": asdict(self.strategy_config),
            "ilora_library": getattr(self, "library_spec", None),
            "ilora_library_hash": self.library.content_hash if self.library is not None else None,
            "ilora_library_size": len(self.library) if self.library is not None else 0,
            "ilora_exclude": self.exclude,
            "ilora_embedder": self._embedder.name if self._embedder is not None else self._embedder_name,
            "ilora_composition": self.composition_mode,
            "ilora_fit_cache": None if self.strategy.env.cache is None else {
                "dir": str(self.strategy.env.cache.dir), "hits": self.strategy.env.cache.hits,
                "misses": self.strategy.env.cache.misses},
            "ilora_tasks": {
                name: {"adaptation_source": t.source, "n_adaptation_examples": len(t.examples),
                       "learned": _named(self.strategy.state.get(name), self.library),
                       "docs_per_example": {str(k[1]): v for k, v in routed.items() if k[0] == name}}
                for name, t in self._tasks.items()
            },
        })
        return info

    def _write_routing_log(self) -> None:
        path = self.routing_log_path or _default_routing_log()
        if not path:
            return
        records = self._route_records
        if self.world_size > 1:
            records = [r for part in self._all_gather_objects(records) for r in part]
        if self.rank != 0:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in sorted(records, key=lambda r: (str(r["task"]), r["doc_id"])):
                fh.write(json.dumps(rec) + "\n")
        os.replace(tmp, path)
        self.routing_log_path = path


def _named(state, library):
    """Learned weights with adapter ids instead of indices (for the results JSON)."""
    if not state or library is None:
        return state
    ids = library.ids

    def conv(d):
        if "indices" in d:
            return {"adapters": [ids[i] for i in d["indices"]], "weights": d["weights"]}
        return d

    if "examples" in state:
        return {"examples": [conv(e) for e in state["examples"]]}
    if "adapter" in state:
        return {"adapter": ids[state["adapter"]]}
    return conv(state)


def _default_routing_log() -> str | None:
    """With `--log_samples --output_path DIR`, the routing log goes beside the samples."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "evaluate" and frame.f_globals.get("__name__") == "lm_eval.evaluator":
            if not frame.f_locals.get("log_samples"):
                return None
            break
        frame = frame.f_back
    if frame is None:
        return None
    argv = sys.argv
    for i, a in enumerate(argv):
        if a in ("--output_path", "-o") and i + 1 < len(argv):
            return os.path.join(argv[i + 1], f"ilora_routing_{time.strftime('%Y-%m-%dT%H-%M-%S')}.jsonl")
        if a.startswith("--output_path="):
            return os.path.join(a.split("=", 1)[1], f"ilora_routing_{time.strftime('%Y-%m-%dT%H-%M-%S')}.jsonl")
    return None


def _as_bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
