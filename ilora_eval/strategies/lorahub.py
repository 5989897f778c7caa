"""LoraHub (task level): n_modules adapters drawn by seed, one learned composition per task."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ilora_eval.errors import IloraError
from ilora_eval.strategies.base import Routing, Strategy, at_least
from ilora_eval.strategies.fit import TaskFit
from ilora_eval.strategies.learned import SearchArgs, SearchJob, learn_weights


@dataclass
class LoraHubConfig(SearchArgs):
    n_modules: int = 20

    def validate(self) -> None:
        super().validate()
        at_least(self, "n_modules", 1, why=" (adapters drawn from the library)")


class LoraHubStrategy(Strategy, name="lorahub"):
    Config = LoraHubConfig
    needs_examples = True
    learned = True

    def drawn_modules(self) -> list[int]:
        n = len(self.env.ids)
        if self.config.n_modules > n:
            raise IloraError(f"n_modules={self.config.n_modules} is larger than the library ({n} adapters); lower n_modules")
        # LoraHub's draw: random.seed(seed); random.sample(LORA_MODULE_NAMES, 20), over the library's
        # listed order (a manifest's order, a folder's sorted listing), so seed s draws LoraHub's modules
        return random.Random(self.config.seed).sample(range(n), self.config.n_modules)

    def _fit(self, tasks):
        indices = self.drawn_modules()
        jobs = [SearchJob(f"task {t.name}", indices, t.examples, self.config.seed) for t in tasks]
        for t, w in zip(tasks, learn_weights(jobs, self.config, self.env)):
            self.state[t.name] = TaskFit.weights(indices, w)

    def route(self, task, doc_texts):
        return [Routing(self.state[task.name].composition())] * len(doc_texts)
