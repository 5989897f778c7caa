"""The held-out adaptation split: a fixed seeded draw per task (`adapt_indices`), or the reference
code's per-seed protocol (`seeded_split`); both give (test, adapt) document lists, which
`_to_dataset_dict` turns into lm-eval's DatasetDict with splits `test` and `adapt`."""

from __future__ import annotations

import random

from ilora_eval.tasks.data import TEST_SPLIT

N_ADAPT = 5
ADAPT_SEED = 42
ADAPT_SPLIT = "adapt"


def adapt_indices(n_docs: int, n_adapt: int = N_ADAPT, seed: int = ADAPT_SEED, key: str = "") -> list[int]:
    """Indices (sorted) of the documents held out as adaptation examples.

    Depends only on (n_docs, n_adapt, seed, key): `random.Random` seeded with the string
    "<seed>:<key>" (a SHA-512 based seeding, stable across processes and Python versions;
    Python's salted `hash()` is never used).
    """
    n_adapt = int(n_adapt)
    if n_adapt < 0 or n_adapt >= n_docs:
        raise ValueError(f"n_adapt={n_adapt} must be >= 0 and smaller than the {n_docs} documents of '{key}'")
    rng = random.Random(f"{int(seed)}:{key}")
    return sorted(rng.sample(range(n_docs), n_adapt))


def _to_dataset_dict(test_rows: list[dict], adapt_rows: list[dict]):
    import datasets

    def build(rows: list[dict]) -> "datasets.Dataset":
        if rows:
            return datasets.Dataset.from_list(rows)
        columns = list(test_rows[0]) if test_rows else ["input", "target"]
        return datasets.Dataset.from_dict({c: [] for c in columns})

    return datasets.DatasetDict({TEST_SPLIT: build(test_rows), ADAPT_SPLIT: build(adapt_rows)})


def seeded_split(rows: list[dict], n_adapt: int, adapt_seed: int) -> tuple[list[dict], list[dict]]:
    """The reference code's per-seed protocol: shuffle with `random.seed(adapt_seed)`, the first
    `n_adapt` documents adapt, the rest are scored (in the shuffled order). Every document records
    the seed in `adapt_seed`, so a run's results say which draw they scored."""
    n_adapt = int(n_adapt)
    if n_adapt < 0 or n_adapt >= len(rows):
        raise ValueError(f"n_adapt={n_adapt} must be >= 0 and smaller than the {len(rows)} documents")
    order = list(range(len(rows)))
    random.Random(int(adapt_seed)).shuffle(order)
    rows = [dict(rows[i], adapt_seed=int(adapt_seed)) for i in order]
    return rows[n_adapt:], rows[:n_adapt]


def split_rows(rows: list[dict], n_adapt: int, seed: int, key: str,
               adapt_seed: int | None = None) -> tuple[list[dict], list[dict]]:
    """(test, adapt): the fixed held-out draw, or with `adapt_seed` the per-seed protocol."""
    if adapt_seed is not None:
        return seeded_split(rows, n_adapt, adapt_seed)
    held = set(adapt_indices(len(rows), n_adapt, seed, key))
    adapt = [r for i, r in enumerate(rows) if i in held]
    test = [r for i, r in enumerate(rows) if i not in held]
    return test, adapt
