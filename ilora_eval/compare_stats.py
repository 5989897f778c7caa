"""Paired significance tests over documents, used by `ilora-eval compare`.

Two runs scored on the same documents give one pair of per-document metric values per
document. For 0/1 metrics (exact_match, acc, acc_norm) the exact McNemar test is used: the
two-sided binomial sign test on the discordant pairs. For any other metric the paired
sign-flip permutation test on the mean difference is used (exact when there are at most
`EXACT_MAX` non-zero differences, Monte Carlo with a fixed seed otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MCNEMAR = "McNemar exact (sign test)"
PERMUTATION = "paired permutation"

# 2**16 sign patterns x 16 differences is about 1M numbers: cheap enough to enumerate.
EXACT_MAX = 16


def is_binary(values: Sequence[float]) -> bool:
    """True when every value is 0 or 1 (bools included)."""
    return all(v == 0 or v == 1 for v in values)


def sign_test_pvalue(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pair counts.

    `a_only`: documents where run A scores 1 and run B 0; `b_only` the reverse.
    Under the null each discordant pair is A-only with probability 1/2.
    """
    from scipy.stats import binomtest

    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)


def permutation_pvalue(diffs: Sequence[float], n_resamples: int = 10000, seed: int = 0) -> tuple[float, bool]:
    """Two-sided paired sign-flip permutation p-value for mean(diffs) == 0.

    Returns (p, exact). Zero differences do not change under a sign flip, so only the
    non-zero ones are permuted. Exact enumeration when there are at most EXACT_MAX of them;
    otherwise `n_resamples` random sign patterns and p = (1 + hits) / (1 + n_resamples).
    """
    d = np.asarray([x for x in diffs if x != 0], dtype=float)
    m = d.size
    if m == 0:
        return 1.0, True
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if m <= EXACT_MAX:
        # every sign pattern: row i uses the bits of i
        idx = np.arange(2**m, dtype=np.int64)[:, None]
        signs = 1 - 2 * ((idx >> np.arange(m)) & 1)
        sums = np.abs(signs @ d)
        return float(np.mean(sums >= observed - tol)), True
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    batch = max(1, min(n_resamples, 2_000_000 // m))  # keep each batch around 16 MB
    while done < n_resamples:
        k = min(batch, n_resamples - done)
        signs = rng.integers(0, 2, size=(k, m), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
        done += k
    return (1 + hits) / (1 + n_resamples), False


def paired_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0) -> tuple[str, float]:
    """(test name, two-sided p-value) for paired per-document values a[i], b[i]."""
    if len(a) != len(b):
        raise ValueError("paired_test needs equally long sequences")
    if is_binary(a) and is_binary(b):
        a_only = sum(1 for x, y in zip(a, b) if x == 1 and y == 0)
        b_only = sum(1 for x, y in zip(a, b) if x == 0 and y == 1)
        return MCNEMAR, sign_test_pvalue(a_only, b_only)
    p, exact = permutation_pvalue([float(x) - float(y) for x, y in zip(a, b)], n_resamples, seed)
    name = f"{PERMUTATION} (exact)" if exact else f"{PERMUTATION} ({n_resamples} resamples)"
    return name, p

