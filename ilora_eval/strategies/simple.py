"""Training-free baselines: base model, uniform average, single best LoRA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ilora_eval.composition import Composition
from ilora_eval.strategies.base import N_ADAPT, Routing, Strategy, StrategyConfig, at_least, check_top_k, top_k
from ilora_eval.strategies.fit import TaskFit


class BaseStrategy(Strategy, name="base"):
    Config = StrategyConfig

    def route(self, task, doc_texts):
        return [Routing(Composition((), ()))] * len(doc_texts)


@dataclass
class UniformConfig(StrategyConfig):
    top_k: int = 0  # 0: all adapters; k: the k nearest to each document

    def validate(self) -> None:
        super().validate()
        at_least(self, "top_k", 0, why=" (0: all adapters)")


class UniformStrategy(Strategy, name="uniform"):
    Config = UniformConfig

    def route(self, task, doc_texts):
        n = len(self.env.ids)
        k = self.config.top_k
        if not k:
            comp = Composition.of(range(n), [1.0 / n] * n)
            return [Routing(comp)] * len(doc_texts)
        check_top_k(k, n)
        sims = self.env.embed(doc_texts) @ self.env.library_centroids().T
        return [Routing(Composition.of(top_k(s, k), [1.0 / k] * k)) for s in sims]


@dataclass
class SingleBestConfig(StrategyConfig):
    n_adapt: int = N_ADAPT

    def validate(self) -> None:
        super().validate()
        at_least(self, "n_adapt", 1, why=" (the adaptation examples the adapter is chosen on)")


class SingleBestStrategy(Strategy, name="single_best"):
    """The one LoRA whose centroid is nearest to the mean of the task's examples (input+target)."""

    Config = SingleBestConfig
    needs_examples = True

    def _fit(self, tasks):
        cents = self.env.library_centroids()
        for t in tasks:
            emb = self.env.embed([e.text + e.target for e in t.examples]).mean(axis=0)
            best = int(np.argmax(cents @ emb))
            self.state[t.name] = TaskFit.adapter(best)

    def route(self, task, doc_texts):
        return [Routing(self.state[task.name].composition())] * len(doc_texts)
