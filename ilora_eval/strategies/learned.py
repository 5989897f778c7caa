"""Shared by the strategies that learn weights with LoraHub's search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ilora_eval.composition import Composition
from ilora_eval.errors import IloraError
from ilora_eval.scoring import OBJECTIVES
from ilora_eval.strategies.base import N_ADAPT, StrategyConfig, at_least
from ilora_eval.search import SearchConfig, WeightSearch, run_lockstep


@dataclass
class SearchArgs(StrategyConfig, SearchConfig):
    n_adapt: int = N_ADAPT
    # "lorahub": LoraHub's default_get_loss exactly (targets with EOS, pooled mean / examples);
    # "mean": lm-eval's continuation encoding, pooled token mean (see ilora_eval.scoring)
    loss: str = "lorahub"

    def validate(self) -> None:
        super().validate()
        if self.loss not in OBJECTIVES:
            raise IloraError(f"loss={self.loss!r} is unknown; choose one of {', '.join(OBJECTIVES)}")
        at_least(self, "n_adapt", 1, why=" (the adaptation examples the weights are learned on)")
        at_least(self, "budget", 1, why=" (search steps)")
        at_least(self, "bound", 0, strict=True, why=" (weights are searched in [-bound, bound])")
        at_least(self, "l1", 0)


@dataclass
class SearchJob:
    label: str
    indices: list[int]  # library adapters the weights apply to
    examples: list  # adaptation examples scored by the loss
    seed: int


def learn_weights(jobs: list[SearchJob], cfg: SearchArgs, env) -> list[np.ndarray]:
    """All jobs' searches advance in lock-step; each step is one batched scoring call."""
    searches = [WeightSearch(len(j.indices), j.seed, cfg, j.label) for j in jobs]

    def score_batch(live, weights):
        comps = [Composition.of(jobs[i].indices, w) for i, w in zip(live, weights)]
        return env.score(comps, [jobs[i].examples for i in live], cfg.loss)

    return run_lockstep(searches, score_batch, progress=env.progress)
