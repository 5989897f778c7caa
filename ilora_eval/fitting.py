"""Fitting: every task of a run learned once, from its adaptation examples.

One job: the run's task data (adaptation examples drawn with the run's seed), the seed policy,
the fit cache, the lock-step fit of all tasks at once and, with several ranks, the broadcast of
rank 0's learned state. Inputs are plain (task objects by name, prompt settings, a seed): nothing
here reads lm-eval's frames (the model wrapper hands them down, `lm_eval_compat.RunContext`).
"""

from __future__ import annotations

import sys
from dataclasses import asdict

from ilora_eval.adaptation import TaskData, load_tasks, task_data
from ilora_eval.distributed import Collectives
from ilora_eval.errors import IloraError
from ilora_eval.lm_eval_compat import PromptSettings
from ilora_eval.util import is_false

# bumped whenever what a cached fit depends on changes meaning (2: LoraHub's exact objective; 3: the
# decoder-only objective ends the answer with the task's stop sequence; 4: the library hash covers
# the adapters' order, entries record the adapter ids their positions mean)
FIT_CACHE_VERSION = 4


class Fitting:
    def __init__(self, *, strategy, strategy_name: str, config, library, embedder_name: str | None,
                 context: dict, collectives: Collectives, include_paths: list[str], fit_cache: str | None):
        self.strategy = strategy
        self.strategy_name = strategy_name
        self.config = config
        self.library = library
        self.embedder_name = embedder_name
        self.context = context  # what a learned fit depends on besides the strategy (base model, dtype, ...)
        self.comm = collectives
        self.include_paths = include_paths
        self.fit_cache_setting = fit_cache
        self.seed_source: str | None = None
        self.tasks: dict[str, TaskData] = {}

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

    def prepare(self, tasks: dict, names: list[str], settings: PromptSettings, run_seed: int | None) -> list[str]:
        """Fit every not yet fitted task in `names` (all tasks of a run at once: their weight
        searches advance in lock-step). `tasks` maps names to lm-eval Task objects or ready
        `TaskData` where known (others are loaded by name when the strategy needs examples).
        Returns the names fitted now."""
        new = [n for n in sorted(names) if n not in self.tasks]
        if not new:
            return new
        seed = self.resolve_seed(run_seed)
        if self.strategy.env.cache is None:
            self.strategy.env.cache = self._fit_cache()
        needs = self.strategy.needs_examples
        missing = [n for n in new if n not in tasks]
        if missing and needs:
            tasks = {**tasks, **load_tasks(missing, self.include_paths)}
        for n in new:
            task = tasks.get(n)
            if isinstance(task, TaskData):  # given as plain data (tests, tools): used as it is
                self.tasks[n] = task
            elif task is not None and needs:
                # every strategy that needs examples has n_adapt (its default lives in its config)
                self.tasks[n] = task_data(n, task, self.config.n_adapt, seed, settings)
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
        return new
