"""The Router: from lm-eval's documents to composition ids, and the record of how.

It owns the library, the embedder (and its cache), the centroids, the strategy, the composition
table, the fit cache, the per-document routes and their records. The model class asks it two
things: `prepare_run(requests)` (fit every task of the run once, from its adaptation examples) and
`route(requests)` (a composition id per request); `records` and `info()` report what happened.

    lm-eval request → IloraLM (tags) → Router.route → Strategy.route → CompositionState id
                                                                          ↓
                                            ComposedLoraLinear applies it per batch row
"""

from __future__ import annotations

import sys
from dataclasses import asdict

import numpy as np

from ilora_eval import lm_eval_compat as compat
from ilora_eval.adaptation import TaskData, load_tasks, task_data
from ilora_eval.composition import CompositionState
from ilora_eval.distributed import Collectives
from ilora_eval.errors import IloraError
from ilora_eval.lm_eval_compat import PromptSettings
from ilora_eval.records import RoutingRecords
from ilora_eval.strategies import StrategyEnv, strategy_class
from ilora_eval.util import is_false

# bumped whenever what a cached fit depends on changes meaning (2: LoraHub's exact objective; 3: the
# decoder-only objective ends the answer with the task's stop sequence; 4: the library hash covers
# the adapters' order, entries record the adapter ids their positions mean)
FIT_CACHE_VERSION = 4


class Router:
    def __init__(self, *, strategy: str, config, library, state: CompositionState, scorer, embedder: str | None,
                 fit_cache: str | None, context: dict, collectives: Collectives, include_paths: list[str],
                 progress: bool = True, library_spec: str | None = None, exclude: str | None = None,
                 routing_log: str | None = None):
        self.strategy_name = strategy
        self.config = config
        self.library = library
        self.state = state
        self.embedder_name = embedder
        self.context = context  # what a learned fit depends on besides the strategy (base model, dtype, ...)
        self.comm = collectives
        self.include_paths = include_paths
        self.fit_cache_setting = fit_cache
        self.library_spec, self.exclude = library_spec, exclude  # as given, for the record
        self._embedder = None
        self._embed_cache: dict[str, np.ndarray] = {}
        env = StrategyEnv(ids=library.ids if library is not None else [], centroids=self.centroids,
                          embed=self.embed, score=scorer, progress=progress and collectives.rank == 0)
        self.strategy = strategy_class(strategy)(config, env)
        self.seed_source: str | None = None
        self.tasks: dict[str, TaskData] = {}
        self._routes: dict[tuple, int] = {}
        self.records = RoutingRecords(collectives, routing_log)

    # ------------------------------------------------------------------ embeddings
    def embedder(self):
        if self._embedder is None:
            from ilora_eval.embeddings import load_embedder

            self._embedder = load_embedder(self.embedder_name, device="cpu")
        return self._embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._embed_cache]
        if missing:
            for t, e in zip(missing, self.embedder().encode(missing)):
                self._embed_cache[t] = e
        return np.stack([self._embed_cache[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def centroids(self) -> np.ndarray:
        from ilora_eval.library_index import INDEX_JSON, load_centroids

        embedder = self.embedder()
        if self.comm.world_size > 1:  # rank 0 builds a missing index; every rank waits (one barrier each)
            if self.comm.rank == 0 and not (self.library.index_dir / INDEX_JSON).is_file():
                load_centroids(self.library, embedder)
            self.comm.barrier()
        return load_centroids(self.library, embedder)

    # ------------------------------------------------------------------ fitting
    def resolve_seed(self, run_seed: int | None) -> int:
        """seed= if given, else lm-eval's --seed of the run (its default 0 outside a run)."""
        if self.seed_source is None:
            if self.config.seed is not None:
                self.seed_source = "model_args seed="
            elif run_seed is not None:
                if int(run_seed) < 0:
                    # lm-eval accepts any int; LoraHub's draw and nevergrad need a seed >= 0
                    raise IloraError(f"lm_eval --seed {run_seed} is negative; give a seed >= 0 "
                                     "(or seed= in --model_args)")
                self.config.seed, self.seed_source = int(run_seed), "lm_eval --seed"
            else:
                self.config.seed, self.seed_source = 0, "default (lm-eval's default seed 0)"
        return self.config.seed

    def _fit_cache(self):
        if not self.strategy.learned or is_false(self.fit_cache_setting):
            return None
        from ilora_eval.fit_cache import FitCache, default_cache_dir

        context = {"version": FIT_CACHE_VERSION, "strategy": self.strategy_name, "args": asdict(self.config),
                   "library_hash": self.library.content_hash if self.library is not None else None,
                   "embedder": self.embedder_name or "default", **self.context}
        return FitCache(self.fit_cache_setting or default_cache_dir(), context)

    def prepare(self, tasks: dict, names: list[str], settings: PromptSettings, run_seed: int | None) -> None:
        """Fit every not yet fitted task in `names` (all tasks of a run at once: their weight
        searches advance in lock-step). `tasks` maps names to lm-eval Task objects where known."""
        new = [n for n in sorted(names) if n not in self.tasks]
        if not new:
            return
        seed = self.resolve_seed(run_seed)
        if self.strategy.env.cache is None:
            self.strategy.env.cache = self._fit_cache()
        missing = [n for n in new if n not in tasks]
        if missing and self.strategy.needs_examples:
            tasks = {**tasks, **load_tasks(missing, self.include_paths)}
        n_adapt = getattr(self.config, "n_adapt", 5)
        for n in new:
            task = tasks.get(n)
            if task is not None and self.strategy.needs_examples:
                self.tasks[n] = task_data(n, task, n_adapt, seed, settings)
            else:
                self.tasks[n] = TaskData(n, task, [], "none")
        self.strategy.fit([self.tasks[n] for n in new])
        cache = self.strategy.env.cache
        if cache is not None and cache.hits and self.comm.rank == 0:
            print(f"ilora-eval: reused learned weights of {cache.hits} task(s) from {cache.dir} "
                  f"({cache.misses} computed)", file=sys.stderr)
        if self.comm.world_size > 1 and self.strategy.learned:
            # every rank learned the same thing from the same seed; rank 0's copy removes any float
            # nondeterminism between devices
            self.strategy.state = self.comm.broadcast(self.strategy.state)

    def prepare_run(self, requests, settings: PromptSettings) -> None:
        """Fit all tasks of the run at once (from the evaluator's own Task objects, the same on
        every rank), and route every document lm-eval built for them, so the record is complete
        even when lm-eval's request cache answers everything. Outside an lm-eval run: the tasks of
        `requests`, every rank's (a collective when there are several ranks)."""
        tasks = compat.live_tasks()
        if tasks is not None:
            names = list(tasks)
        else:
            tasks = {}
            names = sorted({r.task_name for r in requests if r.task_name})
            if self.comm.world_size > 1:
                names = sorted(set().union(*self.comm.gather_objects(names)))
        self.prepare(tasks, names, settings, compat.run_seed())
        for task in tasks.values():
            self.route(compat.task_instances(task))

    # ------------------------------------------------------------------ routing
    def route(self, requests) -> list[int]:
        """A composition id per request (lm-eval Instances: task_name, doc_id, doc, args)."""
        pending: dict[str, dict[tuple, str]] = {}
        for r in requests:
            key = (r.task_name, r.doc_id)
            if key not in self._routes:
                data = self.tasks.get(r.task_name) or TaskData(str(r.task_name), None, [], "none")
                pending.setdefault(r.task_name, {}).setdefault(key, data.doc_text(r.doc, r.args[0]))
        for task_name, items in pending.items():
            data = self.tasks.get(task_name) or TaskData(str(task_name), None, [], "none")
            for key, routing in zip(items, self.strategy.route(data, list(items.values()))):
                self._routes[key] = self.state.register(routing.composition)
                self.records.add(key, routing, self.library.ids if self.library is not None else [])
        return [self._routes[(r.task_name, r.doc_id)] for r in requests]

    def forget_routes(self) -> None:
        """Drops every route, record and cached embedding (the throughput benchmark times routing)."""
        self._routes.clear()
        self.records.clear()
        self._embed_cache.clear()

    # ------------------------------------------------------------------ reporting
    def fingerprint(self) -> dict:
        """What distinguishes this configuration's outputs (for lm-eval's --use_cache stamp)."""
        return {"library_hash": self.library.content_hash if self.library is not None else None,
                "strategy": self.strategy_name, "args": asdict(self.config),
                "composition": self.state.mode, "embedder": self.embedder_name or "default"}

    def info(self, run_name: str) -> dict:
        """The results `config` keys of this run (no collectives: rank 0 calls it alone). Routing
        counts are over the records as last gathered."""
        per_example = self.records.docs_per_example()
        fits = self.strategy.state
        cache = self.strategy.env.cache
        return {
            "ilora_strategy": self.strategy_name,
            "ilora_args": asdict(self.config),
            "ilora_seed": {"value": self.config.seed, "source": self.seed_source},
            "ilora_library_hash": self.library.content_hash if self.library is not None else None,
            "ilora_library_size": len(self.library) if self.library is not None else 0,
            "ilora_embedder": self._embedder.name if self._embedder is not None else self.embedder_name,
            "ilora_composition": self.state.mode,
            "ilora_fit_cache": None if cache is None else {"dir": str(cache.dir), "hits": cache.hits,
                                                           "misses": cache.misses},
            "ilora_tasks": {
                # a strategy that learns nothing reports {}
                name: {**t.record(), "learned": fits[name].named(self.library.ids) if name in fits else {},
                       "docs_per_example": per_example.get(name, {})}
                for name, t in self.tasks.items()
            },
            "ilora_library": self.library_spec,
            "ilora_exclude": self.exclude,
            "ilora_excluded": list(self.library.excluded) if self.library is not None else [],
            "ilora_run_name": run_name,
            "ilora_routing_log": self.records.log_path,
        }

    def run_name(self) -> str:
        """`ilora-<strategy>[-<arg><value>...]-seed<s>-lib<hash>`: the arguments that differ from the
        strategy's defaults, so each configuration gets its own lm-eval output folder. The seed is
        always named: under the per-seed protocol it also selects the scored documents."""
        defaults = asdict(type(self.config)())
        args = asdict(self.config)
        parts = [f"ilora-{self.strategy_name}"]
        parts += [f"{k}{v}" for k, v in sorted(args.items()) if k != "seed" and v != defaults.get(k)]
        parts.append(f"seed{self.config.seed}")
        if self.state.mode != "param" and self.strategy_name != "arrow":
            parts.append(self.state.mode)
        if self.library is not None:
            parts.append(f"lib{self.library.content_hash[:8]}")
        return "-".join(parts)
