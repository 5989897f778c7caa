"""Statistics for `ilora-eval compare`: seed summaries, per-task tests, stratified bootstrap
intervals and multiple-testing corrections.

Per-task tests compare two groups' per-document values. Paired 0/1 values: the exact McNemar
test (a two-sided binomial test on the discordant documents, `scipy.stats.binomtest`). Other
paired values (e.g. a mean over seeds, or a non-0/1 metric): the paired sign-flip permutation
test on the mean difference (`scipy.stats.permutation_test`, exact when the resamples cover
every sign pattern). Unpaired values: the two-sample permutation test on the difference of means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MCNEMAR = "McNemar exact (sign test)"
PERMUTATION = "paired permutation"
PERMUTATION_UNPAIRED = "unpaired permutation"

# Up to this many indices are drawn per bootstrap chunk (about 8 MB of int64).
_CHUNK = 1_000_000


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1) over seeds; sd is None for a single value."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("mean_sd needs at least one value")
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def is_binary(values: Sequence[float] | np.ndarray) -> bool:
    arr = np.asarray(values, dtype=float)
    return bool(np.all((arr == 0) | (arr == 1)))


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p from the discordant counts (A right and B wrong, and the reverse)."""
    from scipy.stats import binomtest

    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def paired_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0) -> tuple[str, float]:
    """(test name, two-sided p) for paired values a[i], b[i]."""
    from scipy.stats import permutation_test

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("paired_test needs two equally long 1-d sequences")
    if is_binary(x) and is_binary(y):
        return MCNEMAR, mcnemar_p(int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1))))
    # A zero difference is the same under a sign flip: dropping it leaves the p-value unchanged and
    # makes the exact enumeration (2**n patterns) reachable for more tasks.
    d = (x - y)[x != y]
    if d.size <= 1:  # one sign flip mirrors the other: |mean| is the same under both patterns
        return f"{PERMUTATION} (exact)", 1.0
    # one sample with permutation_type="samples" is scipy's sign-flip test
    res = permutation_test((d,), _mean, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
                           alternative="two-sided", random_state=seed)
    exact = 2 ** min(d.size, 62) <= n_resamples
    return (f"{PERMUTATION} (exact)" if exact else f"{PERMUTATION} ({n_resamples} resamples)"), float(res.pvalue)


def unpaired_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0) -> tuple[str, float]:
    """(test name, two-sided p) for two independent samples: permutation test on the mean difference."""
    from scipy.stats import permutation_test

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("unpaired_test needs two non-empty samples")
    if np.all(np.concatenate([x, y]) == x[0]):
        return PERMUTATION_UNPAIRED, 1.0
    res = permutation_test((x, y), _mean_diff, permutation_type="independent", vectorized=True,
                           n_resamples=n_resamples, alternative="two-sided", random_state=seed)
    return f"{PERMUTATION_UNPAIRED} ({n_resamples} resamples)", float(res.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down; controls the family-wise error rate)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate)."""
    from scipy.stats import false_discovery_control

    if len(pvalues) == 0:
        return []
    return np.asarray(false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")).tolist()


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg}


@dataclass
class Interval:
    estimate: float
    low: float
    high: float


def stratified_bootstrap(strata: Sequence[Sequence[np.ndarray]], n_resamples: int = 10000, seed: int = 0,
                         confidence: float = 0.95) -> Interval:
    """Percentile interval for the mean over strata of each stratum's statistic.

    A stratum is (values,) -- its statistic is the mean of the values (one group's documents, or
    paired per-document differences) -- or (a, b), two independent samples whose statistic is
    mean(a) - mean(b). Each sample is resampled with replacement within its own stratum, so every
    resample keeps each task's size and every task weighs the same, as in the point estimate.
    """
    if not strata:
        raise ValueError("stratified_bootstrap needs at least one stratum")
    rng = np.random.default_rng(seed)
    total = np.zeros(n_resamples)
    estimate = 0.0
    for stratum in strata:
        for sign, sample in zip((1.0, -1.0), stratum):
            values = np.asarray(sample, dtype=float)
            if values.size == 0:
                raise ValueError("a bootstrap stratum has an empty sample")
            estimate += sign * values.mean()
            total += sign * _resampled_means(values, n_resamples, rng)
    k = len(strata)
    alpha = 1.0 - confidence
    low, high = np.quantile(total / k, [alpha / 2, 1 - alpha / 2])
    return Interval(float(estimate / k), float(low), float(high))


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement, same size) of `values`.

    Documents take few distinct values (0/1, or k/seeds), so a resample is drawn as multinomial
    counts over the distinct values: the same distribution as drawing indices, far fewer numbers.
    """
    n = values.size
    distinct, counts = np.unique(values, return_counts=True)
    probs = counts / n
    out = np.empty(n_resamples)
    step = max(1, _CHUNK // distinct.size)
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        draws = rng.multinomial(n, probs, size=stop - start)
        out[start:stop] = draws @ distinct / n
    return out


# --- two-level (seed, then document) bootstrap -------------------------------------------------

# Up to this many multinomial counts (resamples x document categories) are drawn per chunk (16 MB).
_INDEX_CHUNK = 2_000_000


@dataclass
class Side:
    """One group on one task: per run (seed), its per-document values and the document pool they
    index. Runs that scored the same documents share a pool and list their values in the pool's
    document order, so one document draw applies to all of them (documents crossed with seeds);
    documents drawn per seed give each seed its own pool (documents nested in seeds)."""

    values: list[np.ndarray]
    pools: list[int]


@dataclass
class Stratum:
    """One task: side `a`, and for a difference side `b` (whose pools are shared with `a` where
    the two groups scored the same documents: paired documents). `paired_seeds`: b's run i has
    the same seed as a's run i, so both take the same seed draw."""

    pool_sizes: list[int]
    a: Side
    b: Side | None = None
    paired_seeds: bool = False


@dataclass
class _Pool:
    """One document pool with every run (of either side) that scored it: documents whose values
    agree across those runs are one category, so a resample of the documents is drawn as
    multinomial counts over the categories -- the same distribution as drawing document indices,
    with far fewer numbers (0/1 values of two paired runs have at most four categories)."""

    n: int
    values: np.ndarray  # (documents, runs)
    rows: np.ndarray  # (categories, runs) distinct value rows
    probs: np.ndarray  # share of the pool's documents in each category
    targets: list[tuple[int, int]]  # per column: (side 0 = a / 1 = b, run index)

    @classmethod
    def of(cls, st: "Stratum", pool: int) -> "_Pool":
        columns, targets = [], []
        for k, side in enumerate((st.a, st.b)):
            for r, (v, p) in enumerate(zip(side.values, side.pools) if side is not None else ()):
                if p == pool:
                    columns.append(np.asarray(v, dtype=float))
                    targets.append((k, r))
        n = st.pool_sizes[pool]
        if not columns:
            raise ValueError(f"document pool {pool} is scored by no run")
        if any(c.size != n for c in columns):
            raise ValueError("a run's values do not match its pool's size")
        values = np.stack(columns, axis=1)
        rows, counts = np.unique(values, axis=0, return_counts=True)
        return cls(n, values, rows, counts / n, targets)

    @property
    def width(self) -> int:
        return self.rows.shape[0] if self._few else self.n

    @property
    def _few(self) -> bool:
        # a multinomial draw costs about ten index draws per category
        return self.rows.shape[0] * 10 <= self.n

    def draw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """(k, columns): each column's mean over k resamples of the pool's documents."""
        if self._few:
            return rng.multinomial(self.n, self.probs, size=k) @ self.rows / self.n
        idx = rng.integers(0, self.n, size=(k, self.n)) + (np.arange(k) * self.n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=k * self.n).reshape(k, self.n)
        return counts @ self.values / self.n


def _seed_mean(m: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds, with the seed part scaled by sqrt(S / (S - 1)) so its bootstrap
    variance is the unbiased s^2 / S rather than the plug-in (S - 1) / S * s^2 / S (the plug-in
    under-covers badly with the 3-5 seeds a run usually has)."""
    s = m.shape[1]
    full = m.mean(axis=1)
    if s < 2:
        return full
    drawn = np.take_along_axis(m, picks, axis=1).mean(axis=1)
    return full + np.sqrt(s / (s - 1)) * (drawn - full)


def two_level_bootstrap(strata: Sequence[Stratum], n_resamples: int = 10000, seed: int = 0,
                        confidence: float = 0.95) -> Interval:
    """Percentile interval for the mean over tasks of (a's seed-mean score) or of (a's minus b's).

    Each resample draws the seeds (runs) of each group with replacement -- the same draw for every
    task, since a seed is one run over all tasks, and the same draw for both groups when their
    seeds are paired -- then the documents of every pool with replacement (shared by the runs and
    groups that scored those documents). A group of one run has no seed level: its interval is the
    document-only one, which is why a one-seed learned strategy is never called significant.
    """
    if not strata:
        raise ValueError("two_level_bootstrap needs at least one stratum")
    rng = np.random.default_rng(seed)
    first = strata[0]
    n_a = len(first.a.values)
    n_b = len(first.b.values) if first.b is not None else 0
    if any(len(st.a.values) != n_a or (st.b is not None and len(st.b.values) != n_b) for st in strata):
        raise ValueError("every stratum needs the same runs per group (a seed is one run over all tasks)")
    estimate = float(np.mean([_point(st) for st in strata]))
    pools = [[_Pool.of(st, p) for p in range(len(st.pool_sizes))] for st in strata]
    widest = max(pool.width for ps in pools for pool in ps)
    step = max(1, _INDEX_CHUNK // widest)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, step):
        k = min(n_resamples, start + step) - start
        picks_a = rng.integers(0, n_a, size=(k, n_a))
        picks_b = picks_a if first.paired_seeds else rng.integers(0, max(n_b, 1), size=(k, max(n_b, 1)))
        total = np.zeros(k)
        for ps in pools:
            m = [np.empty((k, n_a)), np.empty((k, n_b))]
            for pool in ps:
                means = pool.draw(k, rng)
                for col, (side, run) in enumerate(pool.targets):
                    m[side][:, run] = means[:, col]
            total += _seed_mean(m[0], picks_a)
            if n_b:
                total -= _seed_mean(m[1], picks_b)
        out[start:start + k] = total / len(strata)
    alpha = 1.0 - confidence
    low, high = np.quantile(out, [alpha / 2, 1 - alpha / 2])
    return Interval(estimate, float(low), float(high))


def _point(st: Stratum) -> float:
    a = float(np.mean([v.mean() for v in st.a.values]))
    return a - float(np.mean([v.mean() for v in st.b.values])) if st.b is not None else a


def seed_test(a: Sequence[float], b: Sequence[float], paired: bool, n_resamples: int = 10000,
              seed: int = 0) -> tuple[str, float]:
    """(test name, two-sided p) over per-seed task scores: sign flips of the seed differences when
    the seeds are paired (or b is one deterministic score), else the two-sample permutation test."""
    if paired:
        name, p = paired_test(a, b, n_resamples, seed)
        return name + " over seeds", p
    name, p = unpaired_test(a, b, n_resamples, seed)
    return name + " over seeds", p
