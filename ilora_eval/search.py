"""LoraHub's gradient-free weight search, as independent searches advanced in lock-step.

One search = nevergrad NGOpt over `n` weights (init 0, bounds ±bound, budget steps, one worker,
so NGOpt picks Cobyla as LoraHub's does). `run_lockstep` asks every live search for a candidate,
scores all candidates with ONE call of `score_batch` (one batched forward), and tells each its
loss. Each search sees exactly the asks and tells it would see alone, so the weights equal those
of `optimizer.minimize` run sequentially with the same seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ilora_eval.errors import IloraError


@dataclass
class SearchConfig:
    budget: int = 40
    bound: float = 1.5
    l1: float = 0.05
    optimizer: str = "NGOpt"


def make_optimizer(n: int, seed: int, cfg: SearchConfig):
    import nevergrad as ng

    # scipy's COBYLA complains about nevergrad's default stopping radius on every search
    warnings.filterwarnings("ignore", message="COBYLA: Invalid RHOEND")

    param = ng.p.Array(init=[0.0] * n, upper=[cfg.bound] * n, lower=[-cfg.bound] * n)
    param.random_state = np.random.RandomState(seed)
    try:
        opt_cls = ng.optimizers.registry[cfg.optimizer]
    except KeyError:
        raise IloraError(f"optimizer={cfg.optimizer!r} is not a nevergrad optimizer; use NGOpt (LoraHub's) or e.g. CMA") from None
    return opt_cls(parametrization=param, budget=cfg.budget, num_workers=1)


def l1_penalty(weights: np.ndarray, cfg: SearchConfig) -> float:
    return cfg.l1 * float(np.abs(weights).sum()) / len(weights)


class WeightSearch:
    """ask()/tell() around one nevergrad optimizer; `label` names the search in errors."""

    def __init__(self, n: int, seed: int, cfg: SearchConfig, label: str):
        self.cfg = cfg
        self.label = label
        self.opt = make_optimizer(n, seed, cfg)
        self.steps = 0
        self._cand = None

    @property
    def done(self) -> bool:
        return self.steps >= self.cfg.budget

    def ask(self) -> np.ndarray:
        self._cand = self.opt.ask()
        return np.asarray(self._cand.value, dtype=np.float64)

    def tell(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise IloraError(f"weight search for {self.label} produced a non-finite loss at step {self.steps + 1}; "
                             "its adapters or examples give NaN/inf (check the library weights, or lower the bound)")
        self.opt.tell(self._cand, loss)
        self.steps += 1

    def result(self) -> np.ndarray:
        return np.asarray(self.opt.provide_recommendation().value, dtype=np.float64)

    def close(self) -> None:
        """Stops the optimizer's background thread. NGOpt's Cobyla is scipy's, recast by nevergrad
        into ask/tell by running it in a non-daemon thread that waits for the next tell; only the
        optimizer's garbage collection stops it. An interrupted or failed search keeps its
        optimizer alive in the traceback, so without this Python would wait for that thread
        forever at exit (Ctrl-C printed a traceback, then hung until a second Ctrl-C)."""
        stack = [self.opt]
        while stack:
            opt = stack.pop()
            thread = getattr(opt, "_messaging_thread", None)
            if thread is not None:
                thread.stop()
            stack += [o for o in [getattr(opt, "optim", None), *(getattr(opt, "optims", None) or [])] if o is not None]


def run_lockstep(searches: Sequence[WeightSearch],
                 score_batch: Callable[[list[int], list[np.ndarray]], list[float]],
                 progress: bool = True) -> list[np.ndarray]:
    """`score_batch(search_ids, weights)` returns the task loss (without L1) of each candidate."""
    from tqdm.auto import tqdm

    total = sum(s.cfg.budget for s in searches)
    try:
        with tqdm(total=total, desc=f"Weight search ({len(searches)} in lock-step)", disable=not progress) as bar:
            while True:
                live = [i for i, s in enumerate(searches) if not s.done]
                if not live:
                    break
                cands = [searches[i].ask() for i in live]
                losses = score_batch(live, cands)
                for i, w, loss in zip(live, cands, losses):
                    searches[i].tell(float(loss) + l1_penalty(w, searches[i].cfg))
                bar.update(len(live))
        return [s.result() for s in searches]
    finally:  # done, failed or interrupted (Ctrl-C): no optimizer thread may outlive the search
        for s in searches:
            s.close()
