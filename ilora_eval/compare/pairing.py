"""Matching documents between two groups of runs, one task at a time.

A group keeps every run's per-document values (from the `--log_samples` files), keyed by
(document seed or None, doc_id). Its value for a document in a per-task test is the mean over its
runs (seeds) of that document's metric. Documents are matched by doc_id. When the task pack drew
the scored documents per seed (`adapt_seed`), a doc_id means another document under another seed:
documents are then keyed by (seed, doc_id) and paired only within the same seed; two groups with
different seeds then scored independent draws of one pool and are compared unpaired. Otherwise a
comparison uses only the documents both groups scored (same doc_id and, where logged, the same
doc_hash): runs with another `--limit` are compared on their shared documents, and a task where
the groups share none is not compared at all.

`strata()` turns a group (or a pair) into the two-level bootstrap's input (stats.Stratum).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import stats
from .labels import Group
from .results import NoSamples, Run

Key = tuple[Any, Any]  # (document seed or None, doc_id)


@dataclass
class Units:
    """One group's per-document values for one task."""

    group: str
    runs: list[Run]
    per_run: list[dict[Key, float]]  # each run's values (only documents every run of its seed scored)
    values: dict[Key, float]  # seed means
    hashes: dict[Key, str | None]
    doc_seeds: frozenset  # empty when the documents do not depend on a seed
    note: str = ""

    @property
    def nested(self) -> bool:
        return bool(self.doc_seeds)

    def run_doc_seed(self, i: int) -> Any:
        return next(iter(self.per_run[i]))[0] if self.per_run[i] else None


@dataclass
class Matched:
    design: str  # "paired" | "unpaired" | "none" (no document in common: not comparable)
    a: np.ndarray
    b: np.ndarray
    keys: list[Key]  # the shared documents (paired design)
    note: str = ""


def seed_key(run: Run) -> str:
    return json.dumps([run.seed, run.adapt_seed], sort_keys=True, default=str)


def group_units(group: Group, task: str, metric: str, filt: str) -> Units:
    """Raises NoSamples (naming the run) when a run of the group has no usable samples."""
    per_run = []
    for run in group.runs:
        try:
            per_run.append(run.per_doc(task, metric, filt))
        except NoSamples as err:
            raise NoSamples(f"{run.label}: {err}") from None
    seeded = any(task in run.doc_seeds for run in group.runs)
    seeds = [run.doc_seeds.get(task) if seeded else None for run in group.runs]
    sums: dict[Key, list[float]] = {}
    hashes: dict[Key, str | None] = {}
    for seed, docs in zip(seeds, per_run):
        for doc_id, dv in docs.items():
            sums.setdefault((seed, doc_id), []).append(dv.value)
            hashes.setdefault((seed, doc_id), dv.doc_hash)
    # a document counts only when every run of its seed scored it, so the mean is a seed mean
    runs_per_seed = {s: seeds.count(s) for s in seeds}
    values = {k: sum(v) / len(v) for k, v in sums.items() if len(v) == runs_per_seed[k[0]]}
    note = ""
    if len(values) < len(sums):
        note = f"{group.label} / {task}: {len(sums) - len(values)} documents not logged by every run; left out"
    if not values:
        raise NoSamples(f"{group.label}: no document logged by every run")
    runs_values = [{(s, d): docs[d].value for d in docs if (s, d) in values} for s, docs in zip(seeds, per_run)]
    doc_seeds = frozenset(k[0] for k in values) if seeded else frozenset()
    return Units(group.label, list(group.runs), runs_values, values, {k: hashes[k] for k in values}, doc_seeds, note)


def _same_doc(ua: Units, ub: Units, k: Key) -> bool:
    ha, hb = ua.hashes[k], ub.hashes[k]
    return not (ha and hb and ha != hb)


def match(ua: Units, ub: Units) -> Matched:
    """The documents both groups scored, paired; random draws of one pool (per-seed documents
    under different seeds) unpaired; else design "none"."""
    if ua.doc_seeds != ub.doc_seeds and ua.nested and ub.nested:
        return Matched("unpaired", _arr(ua.values.values()), _arr(ub.values.values()), [],
                       "unpaired: documents drawn per seed (adapt_seed) and the groups' seeds differ")
    keys = [k for k in ua.values if k in ub.values and _same_doc(ua, ub, k)]
    if not keys:
        clash = any(k in ub.values for k in ua.values)
        why = "documents with the same doc_id differ (doc_hash)" if clash else "no doc_id in common"
        if ua.nested != ub.nested:
            why = "documents drawn per seed (adapt_seed) in one group only"
        return Matched("none", _arr(()), _arr(()), [], f"not compared: {why}")
    a = _arr(ua.values[k] for k in keys)
    b = _arr(ub.values[k] for k in keys)
    note = ""
    if len(keys) != len(ua.values) or len(keys) != len(ub.values):
        note = (f"compared on the {len(keys)} documents both scored ({len(ua.values)} vs {len(ub.values)} "
                "logged)")
    return Matched("paired", a, b, keys, note)


def _arr(values) -> np.ndarray:
    values = list(values)
    return np.asarray(values, dtype=float).reshape(len(values))


def run_scores(u: Units, keys: list[Key] | None = None) -> list[float]:
    """Each run's score on the documents `keys` (default: all of the group's) of its seed."""
    wanted = set(keys) if keys is not None else None
    out = []
    for docs in u.per_run:
        vals = [v for k, v in docs.items() if wanted is None or k in wanted]
        out.append(float(np.mean(vals)) if vals else float("nan"))
    return out


def _pools(u: Units, keys: list[Key], pool_of: dict[Any, int], sizes: list[int],
           order: list[int]) -> stats.Side:
    """The group's runs (in `order`) as a stats.Side over the pools of `keys` (one per document seed)."""
    by_seed: dict[Any, list[Key]] = {}
    for k in keys:
        by_seed.setdefault(k[0], []).append(k)
    for s, ks in by_seed.items():
        if s not in pool_of:
            pool_of[s] = len(sizes)
            sizes.append(len(ks))
    values, pools = [], []
    for i in order:
        docs = u.per_run[i]
        s = u.run_doc_seed(i) if u.nested else None
        if s not in by_seed:
            raise NoSamples(f"{u.group}: no compared document under document seed {s}")
        values.append(_arr(docs[k] for k in by_seed[s]))
        pools.append(pool_of[s])
    return stats.Side(values, pools)


def seed_order(ua: Units, ub: Units) -> list[int] | None:
    """b's runs reordered to a's seeds when both groups ran the same seeds, else None."""
    ka = [seed_key(r) for r in ua.runs]
    kb = [seed_key(r) for r in ub.runs]
    if len(ka) < 2 or sorted(ka) != sorted(kb) or len(set(ka)) != len(ka):
        return None
    return [kb.index(k) for k in ka]


def group_stratum(u: Units) -> stats.Stratum:
    sizes: list[int] = []
    side = _pools(u, list(u.values), {}, sizes, list(range(len(u.runs))))
    return stats.Stratum(sizes, side)


def pair_stratum(ua: Units, ub: Units, m: Matched) -> stats.Stratum:
    """Paired documents share pools; seeds are drawn together when both groups ran the same ones."""
    order = seed_order(ua, ub)
    sizes: list[int] = []
    if m.design == "paired":
        pool_of: dict[Any, int] = {}
        a = _pools(ua, m.keys, pool_of, sizes, list(range(len(ua.runs))))
        b = _pools(ub, m.keys, pool_of, sizes, order or list(range(len(ub.runs))))
    else:
        a = _pools(ua, list(ua.values), {}, sizes, list(range(len(ua.runs))))
        b = _pools(ub, list(ub.values), {}, sizes, order or list(range(len(ub.runs))))
    return stats.Stratum(sizes, a, b, paired_seeds=order is not None)
