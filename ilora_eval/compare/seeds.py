"""Which groups carry seed variance, and how many seeds measured it.

A learned strategy's result depends on its seed: the adaptation examples it draws and, for the
searched ones, the search path (`lorahub` also draws its modules). The others are deterministic
given their examples and inputs, so one run of them is the whole story. tests/test_compare_seeds.py
checks this table against the strategies' own `needs_examples`.
"""

from __future__ import annotations

from typing import Any

from .labels import Group

LEARNED = ("lorahub", "ilora", "single_best")
DETERMINISTIC = ("base", "uniform", "retrieve_fuse", "arrow")
ONE_SEED = "1 seed: seed variance not measured"
DETERMINISTIC_STATUS = "deterministic"


def _sampling(gen: Any) -> bool:
    return isinstance(gen, dict) and str(gen.get("do_sample", "")).lower() == "true"


def seed_dependent(group: Group) -> bool:
    """True when another seed could give another score."""
    if len(group.runs) > 1:
        return True  # several seeds were run: their spread is measured whatever the strategy
    run = group.runs[0]
    if run.is_ilora:
        return run.strategy not in DETERMINISTIC  # an unknown strategy may use its seed
    # a stock model: greedy decoding of fixed prompts, unless it samples or draws few-shot examples
    shots = run.settings.get("num_fewshot", (0, None))[0]
    fewshot = isinstance(shots, dict) and any(shots.values()) or (not isinstance(shots, dict) and bool(shots))
    return fewshot or _sampling(run.settings.get("gen_kwargs", (None, None))[0])


def seed_status(group: Group) -> str:
    if not seed_dependent(group):
        return DETERMINISTIC_STATUS
    n = len(group.runs)
    return ONE_SEED if n == 1 else f"{n} seeds"


def over_seeds(status_a: str, status_b: str, n_a: int, n_b: int) -> bool:
    """Per-task tests go over seeds when each group has >= 3 seeds or is deterministic (and one has seeds)."""
    ok_a = n_a >= 3 or status_a == DETERMINISTIC_STATUS
    ok_b = n_b >= 3 or status_b == DETERMINISTIC_STATUS
    return ok_a and ok_b and max(n_a, n_b) >= 3


def determinism_text() -> str:
    return (f"Deterministic given their examples and inputs (one run is the whole story): {', '.join(DETERMINISTIC)}, "
            f"and stock models decoding greedily without drawn few-shot examples. Learned, their seed draws the "
            f"adaptation examples and the search path: {', '.join(LEARNED)}; with one seed such a group is marked "
            f"\"{ONE_SEED}\" and nothing it is compared in is called significant.")
