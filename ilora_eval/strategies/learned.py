"""Shared by the strategies that learn weights with LoraHub's search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ilora_eval.composition import Composition
from ilora_eval.errors import IloraError
from ilora_eval.search import SearchConfig, WeightSearch, run_lockstep
from ilora_eval.strategies.registry import StrategyConfig

LOSSES = ("mean", "lorahub")


@dataclass
class SearchArgs(StrategyConfig):
    n_adapt: int = 5
    budget: int = 40
    bound: float = 1.5
    l1: float = 0.05
    # "mean": token-mean cross-entropy of the targets; "lorahub": that divided again by the number
    # of examples, as LoraHub's default_get_loss does (its L1 term then weighs n_adapt times more)
    loss: str = "mean"
    optimizer: str = "NGOpt"

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise IloraError(f"loss={self.loss!r} is unknown; choose one of {', '.join(LOSSES)}")
        if self.budget < 1 or self.bound <= 0:
            raise IloraError(f"budget={self.budget} and bound={self.bound} must be positive")

    def search_config(self) -> SearchConfig:
        return SearchConfig(budget=self.budget, bound=self.bound, l1=self.l1, optimizer=self.optimizer)


@dataclass
class SearchJob:
    label: str
    indices: list[int]  # library adapters the weights apply to
    examples: list  # adaptation examples scored by the loss
    seed: int


def learn_weights(jobs: list[SearchJob], cfg: SearchArgs, env) -> list[np.ndarray]:
    """All jobs' searches advance in lock-step; each step is one batched scoring call."""
    searches = [WeightSearch(len(j.indices), j.seed, cfg.search_config(), j.label) for j in jobs]

    def score_batch(live, weights):
        comps = [Composition.of(jobs[i].indices, w) for i, w in zip(live, weights)]
        losses = env.score(comps, [jobs[i].examples for i in live])
        if cfg.loss == "lorahub":
            losses = [loss / len(jobs[i].examples) for i, loss in zip(live, losses)]
        return losses

    return run_lockstep(searches, score_batch, progress=env.progress)
