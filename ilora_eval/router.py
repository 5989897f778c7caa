"""The Router: from lm-eval's documents to composition ids, and the record of how.

A thin coordinator of three parts with one job each: `Fitting` (task data, seed, fit cache,
lock-step fit, broadcast; `ilora_eval.fitting`), `Embeddings` and `Routes` (embeddings, routes,
records; `ilora_eval.routing`) and the run report (results config, run name, fingerprint;
`ilora_eval.run_report`). The model class asks it two things: `prepare_run(requests, run)` (fit
every task of the run once, from its adaptation examples) and `route(requests)` (a composition id
per request); `records` and `info()` report what happened. Its inputs are plain: the run is a
`RunContext` the wrapper read once; nothing here reads lm-eval's frames.

    lm-eval request → IloraLM (tags) → Router.route → Strategy.route → CompositionState id
                                                                          ↓
                                            ComposedLoraLinear applies it per batch row
"""

from __future__ import annotations

from ilora_eval import run_report
from ilora_eval.composition import CompositionState
from ilora_eval.distributed import Collectives
from ilora_eval.fitting import Fitting
from ilora_eval.lm_eval_compat import PromptSettings, RunContext, task_instances
from ilora_eval.records import RoutingRecords
from ilora_eval.routing import Embeddings, Routes
from ilora_eval.strategies import StrategyEnv, strategy_class


class Router:
    def __init__(self, *, strategy: str, config, library, state: CompositionState, scorer, embedder: str | None,
                 fit_cache: str | None, context: dict, collectives: Collectives, include_paths: list[str],
                 progress: bool = True, library_spec: str | None = None, exclude: str | None = None,
                 routing_log: str | None = None):
        self.strategy_name, self.config, self.library, self.state = strategy, config, library, state
        self.embedder_name = embedder
        self.comm = collectives
        self.library_spec, self.exclude = library_spec, exclude  # as given, for the record
        self.embeddings = Embeddings(embedder, library, collectives)
        env = StrategyEnv(ids=library.ids if library is not None else [], centroids=self.embeddings.centroids,
                          embed=self.embeddings.embed, score=scorer, progress=progress and collectives.rank == 0)
        self.strategy = strategy_class(strategy)(config, env)
        self.fitting = Fitting(strategy=self.strategy, strategy_name=strategy, config=config, library=library,
                               embedder_name=embedder, context=context, collectives=collectives,
                               include_paths=include_paths, fit_cache=fit_cache)
        self.records = RoutingRecords(collectives, routing_log)
        self.routes = Routes(strategy=self.strategy, tasks=self.fitting.tasks, state=state, library=library,
                             records=self.records)

    # ------------------------------------------------------------------ views of the parts
    @property
    def tasks(self):
        return self.fitting.tasks

    @property
    def seed_source(self) -> str | None:
        return self.fitting.seed_source

    def embed(self, texts):
        return self.embeddings.embed(texts)

    def centroids(self):
        return self.embeddings.centroids()

    def resolve_seed(self, run_seed: int | None) -> int:
        return self.fitting.resolve_seed(run_seed)

    # ------------------------------------------------------------------ fitting
    def prepare(self, tasks: dict, names: list[str], settings: PromptSettings, run_seed: int | None) -> None:
        self.fitting.prepare(tasks, names, settings, run_seed)

    def prepare_run(self, requests, run: RunContext) -> None:
        """Fit all tasks of the run at once (from the evaluator's own Task objects, the same on
        every rank), and route every document lm-eval built for them, so the record is complete
        even when lm-eval's request cache answers everything. Outside an lm-eval run (`run.tasks`
        None): the tasks of `requests`, every rank's (a collective when there are several ranks)."""
        if run.tasks is not None:
            tasks = dict(run.tasks)
            names = list(tasks)
        else:
            tasks = {}
            names = sorted({r.task_name for r in requests if r.task_name})
            if self.comm.world_size > 1:
                names = sorted(set().union(*self.comm.gather_objects(names)))
        self.prepare(tasks, names, run.settings, run.seed)
        for task in tasks.values():
            self.route(task_instances(task))

    # ------------------------------------------------------------------ routing
    def route(self, requests) -> list[int]:
        """A composition id per request (lm-eval Instances: task_name, doc_id, doc, args)."""
        return self.routes.route(requests)

    def forget_routes(self) -> None:
        """Drops every route, record and cached embedding (the throughput benchmark times routing)."""
        self.routes.forget()
        self.embeddings.cache.clear()

    # ------------------------------------------------------------------ reporting
    def fingerprint(self) -> dict:
        return run_report.fingerprint(self)

    def info(self, run_name: str | None) -> dict:
        """The results `config` keys of this run (no collectives: rank 0 calls it alone)."""
        return run_report.results_config(self, run_name)

    def run_name(self) -> str:
        return run_report.run_name(self)
