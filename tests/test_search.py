"""Lock-step weight search reproduces the plain sequential nevergrad search."""

import numpy as np
import pytest

from ilora_eval.errors import IloraError
from ilora_eval.search import SearchConfig, WeightSearch, l1_penalty, make_optimizer, run_lockstep

CENTERS = [np.array([0.3, -0.8, 1.1, 0.0]), np.array([-1.0, 0.5, 0.2, 0.9]), np.array([0.7, 0.7, -0.4, -1.3])]


def loss_of(k):
    return lambda w: float(((w - CENTERS[k]) ** 2).sum() + np.sin(3 * w).sum() * 0.1)


@pytest.mark.parametrize("budget", [12, 40])
def test_lockstep_equals_sequential_minimize(budget):
    cfg = SearchConfig(budget=budget)
    seeds = [1, 2, 3]
    sequential = []
    for k, seed in enumerate(seeds):
        opt = make_optimizer(4, seed, cfg)
        f = loss_of(k)
        sequential.append(np.asarray(opt.minimize(lambda w, f=f: f(w) + l1_penalty(w, cfg)).value))
    calls = []

    def score_batch(live, weights):
        calls.append(len(live))
        return [loss_of(i)(w) for i, w in zip(live, weights)]

    searches = [WeightSearch(4, seed, cfg, f"s{k}") for k, seed in enumerate(seeds)]
    lockstep = run_lockstep(searches, score_batch, progress=False)
    for a, b in zip(lockstep, sequential):
        np.testing.assert_array_equal(a, b)
    assert calls == [3] * budget  # one batched call per step, all three searches in it
    assert all(np.abs(w).max() <= cfg.bound for w in lockstep)
    # the search actually moved towards each optimum
    assert all(loss_of(k)(w) < loss_of(k)(np.zeros(4)) for k, w in enumerate(lockstep))


def test_non_finite_loss_stops_with_the_search_named():
    searches = [WeightSearch(3, 1, SearchConfig(budget=5), "task t example 2")]
    with pytest.raises(IloraError, match="task t example 2.*non-finite"):
        run_lockstep(searches, lambda live, ws: [float("nan")] * len(live), progress=False)


def test_unknown_optimizer_is_refused():
    with pytest.raises(IloraError, match="optimizer='Nope'"):
        make_optimizer(3, 1, SearchConfig(optimizer="Nope"))
