"""Matching documents between two groups of runs, one task at a time.

A group's value for a document is the mean over its runs (seeds) of that document's metric, so
the mean over documents is the group's seed-mean score. Documents are matched by doc_id from the
`--log_samples` files. When the task pack drew the scored documents per seed (`adapt_seed`), a
doc_id means another document under another seed: documents are then keyed by (seed, doc_id)
and paired only within the same seed, which needs both groups to have the same seeds; otherwise
the two groups' documents are compared unpaired. A doc_id whose `doc_hash` differs between the
groups also makes the comparison unpaired (the runs scored different documents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .labels import Group
from .results import NoSamples


@dataclass
class Units:
    """One group's per-document values for one task, keyed by (document seed or None, doc_id)."""

    values: dict[tuple[Any, Any], float]
    hashes: dict[tuple[Any, Any], str | None]
    doc_seeds: frozenset  # empty when the documents do not depend on a seed
    note: str = ""


@dataclass
class Matched:
    design: str  # "paired" | "unpaired"
    a: np.ndarray
    b: np.ndarray
    note: str = ""


def group_units(group: Group, task: str, metric: str, filt: str) -> Units:
    """Raises NoSamples (naming the run) when a run of the group has no usable samples."""
    per_run = []
    for run in group.runs:
        try:
            per_run.append((run, run.per_doc(task, metric, filt)))
        except NoSamples as err:
            raise NoSamples(f"{run.label}: {err}") from None
    seeded = any(task in run.doc_seeds for run in group.runs)
    sums: dict[tuple, list[float]] = {}
    hashes: dict[tuple, str | None] = {}
    for run, docs in per_run:
        seed = run.doc_seeds.get(task) if seeded else None
        for doc_id, dv in docs.items():
            sums.setdefault((seed, doc_id), []).append(dv.value)
            hashes.setdefault((seed, doc_id), dv.doc_hash)
    # a document counts only when every run of its seed scored it, so the mean is a seed mean
    runs_per_seed: dict[Any, int] = {}
    for run, _ in per_run:
        seed = run.doc_seeds.get(task) if seeded else None
        runs_per_seed[seed] = runs_per_seed.get(seed, 0) + 1
    values = {k: sum(v) / len(v) for k, v in sums.items() if len(v) == runs_per_seed[k[0]]}
    note = ""
    if len(values) < len(sums):
        note = f"{group.label} / {task}: {len(sums) - len(values)} documents not logged by every run; left out"
    if not values:
        raise NoSamples(f"{group.label}: no document logged by every run")
    doc_seeds = frozenset(k[0] for k in values) if seeded else frozenset()
    return Units(values, {k: hashes[k] for k in values}, doc_seeds, note)


def match(ua: Units, ub: Units) -> Matched:
    """Pair the two groups' documents when the design allows it, else hand both samples unpaired."""
    unpaired_why = ""
    if ua.doc_seeds != ub.doc_seeds:
        unpaired_why = "documents drawn per seed (adapt_seed) and the groups' seeds differ"
    common = [k for k in ua.values if k in ub.values]
    if not unpaired_why:
        if not common:
            unpaired_why = "no doc_id in common"
        elif any(ua.hashes[k] and ub.hashes[k] and ua.hashes[k] != ub.hashes[k] for k in common):
            unpaired_why = "documents with the same doc_id differ (doc_hash)"
    if unpaired_why:
        return Matched("unpaired", np.fromiter(ua.values.values(), float), np.fromiter(ub.values.values(), float),
                       f"unpaired: {unpaired_why}")
    a = np.fromiter((ua.values[k] for k in common), float, len(common))
    b = np.fromiter((ub.values[k] for k in common), float, len(common))
    note = ""
    if len(common) != len(ua.values) or len(common) != len(ub.values):
        note = f"{len(common)} docs matched ({len(ua.values)} vs {len(ub.values)} logged)"
    return Matched("paired", a, b, note)
