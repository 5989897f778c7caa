"""`ilora-eval compare` with seed variance (issue #17 item 1): the two-level bootstrap (seeds, then
documents), per-task tests over seeds, and one-seed learned strategies that are never significant.

The simulations have known answers: per-document values = group effect + seed effect + document
effect + noise, so the true difference of two groups' means is the difference of their effects.
"""

import itertools
import json

import numpy as np
import pytest

from ilora_eval import compare
from ilora_eval.compare import seeds as seeds_mod
from ilora_eval.compare import stats


def _simulate(rng, effect, n_seeds=8, n_tasks=4, n_docs=30, sd_seed=0.08, sd_doc=0.15, noise=0.02):
    """Two groups on the same documents (doc effects shared: paired documents), independent seeds.
    Returns the two-level strata, the document-only strata (seed means per document) and the truth."""
    strata, doc_only = [], []
    for _ in range(n_tasks):
        doc = rng.normal(0.5, sd_doc, n_docs)
        a = doc + effect + rng.normal(0, sd_seed, (n_seeds, 1)) + rng.normal(0, noise, (n_seeds, n_docs))
        b = doc + rng.normal(0, sd_seed, (n_seeds, 1)) + rng.normal(0, noise, (n_seeds, n_docs))
        pools = [0] * n_seeds
        strata.append(stats.Stratum([n_docs], stats.Side(list(a), pools), stats.Side(list(b), pools)))
        doc_only.append((a.mean(axis=0) - b.mean(axis=0),))
    return strata, doc_only, effect


def test_two_level_interval_covers_the_true_difference_where_document_only_does_not():
    """Seed sd (0.08) dominates the per-document noise (0.02): over 300 simulated comparisons the
    two-level 95% interval covers the true difference about 95% of the time; the document-only
    interval (the former compare) treats the seeds as fixed and covers it far less often."""
    rng = np.random.default_rng(2024)
    n_cases = 300
    two_level = doc_only = 0
    for case in range(n_cases):
        strata, docs, truth = _simulate(rng, effect=0.0)
        iv = stats.two_level_bootstrap(strata, n_resamples=300, seed=case)
        assert iv.low <= iv.estimate <= iv.high
        two_level += iv.low <= truth <= iv.high
        iv_doc = stats.stratified_bootstrap(docs, n_resamples=300, seed=case)
        doc_only += iv_doc.low <= truth <= iv_doc.high
    # binomial sd of a 95% rate over 300 cases is 1.3 points: 0.89 is more than 4 sd below nominal
    assert 0.89 <= two_level / n_cases <= 0.99
    assert doc_only / n_cases < 0.5
    # a large effect is still clearly found
    strata, _, truth = _simulate(rng, effect=0.3)
    iv = stats.two_level_bootstrap(strata, n_resamples=1000, seed=0)
    assert iv.low > 0 and iv.low <= truth <= iv.high


def test_two_level_bootstrap_estimate_pairing_and_one_seed():
    a = [np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 1.0])]
    b = [np.array([0.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0])]
    st = stats.Stratum([4], stats.Side(a, [0, 0]), stats.Side(b, [0, 0]), paired_seeds=True)
    iv = stats.two_level_bootstrap([st, st], n_resamples=500, seed=1)
    # the estimate is the difference of the seed means of the document means, over tasks
    assert iv.estimate == pytest.approx(np.mean([x.mean() for x in a]) - np.mean([x.mean() for x in b]))
    assert iv == stats.two_level_bootstrap([st, st], n_resamples=500, seed=1)  # reproducible
    # identical groups, paired seeds and documents: every resample gives exactly 0
    same = stats.Stratum([4], stats.Side(a, [0, 0]), stats.Side(a, [0, 0]), paired_seeds=True)
    assert stats.two_level_bootstrap([same], 200) == stats.Interval(0.0, 0.0, 0.0)
    # one run per group: no seed level; a constant per-document difference has a zero-width interval
    one = stats.Stratum([3], stats.Side([np.array([1.0, 1.0, 1.0])], [0]), stats.Side([np.zeros(3)], [0]))
    assert stats.two_level_bootstrap([one], 200) == stats.Interval(1.0, 1.0, 1.0)
    # documents drawn per seed: each seed its own pool
    nested = stats.Stratum([2, 3], stats.Side([np.array([1.0, 1.0]), np.array([0.0, 0.0, 0.0])], [0, 1]))
    iv = stats.two_level_bootstrap([nested], 2000, seed=0)
    assert iv.estimate == pytest.approx(0.5)
    assert iv.low < 0.1 and iv.high > 0.9  # the seed draw alone moves the mean between 0 and 1
    with pytest.raises(ValueError):
        stats.two_level_bootstrap([st, stats.Stratum([4], stats.Side(a[:1], [0]))], 10)


def test_strategy_table_matches_the_strategies():
    """compare's learned / deterministic lists name every registered strategy once, and the learned
    ones are exactly those that draw adaptation examples by seed."""
    from ilora_eval.strategies import base

    names = set(base.Strategy.registry)
    assert set(seeds_mod.LEARNED) | set(seeds_mod.DETERMINISTIC) == names
    assert not set(seeds_mod.LEARNED) & set(seeds_mod.DETERMINISTIC)
    assert {n for n in names if base.Strategy.registry[n].needs_examples} == set(seeds_mod.LEARNED)


def _run(directory, stamp, strategy, seed, tasks):
    directory.mkdir(parents=True, exist_ok=True)
    results, n_samples = {}, {}
    for task, values in tasks.items():
        results[task] = {"alias": task, "exact_match,none": float(np.mean(values)), "exact_match_stderr,none": "N/A"}
        n_samples[task] = {"original": len(values), "effective": len(values)}
        (directory / f"samples_{task}_{stamp}.jsonl").write_text("".join(
            json.dumps({"doc_id": i, "filter": "none", "exact_match": float(v), "doc_hash": f"h{i}"}) + "\n"
            for i, v in enumerate(values)))
    config = {"model": "ilora", "model_args": f"pretrained=org/base,library=lib,strategy={strategy},seed={seed}",
              "ilora_strategy": strategy, "ilora_args": {"seed": seed}, "ilora_library_hash": "h"}
    path = directory / f"results_{stamp}.json"
    path.write_text(json.dumps({"results": results, "configs": {}, "n-samples": n_samples, "config": config,
                                "n-shot": {t: 0 for t in tasks}}))
    return str(path)


def test_one_seed_learned_strategy_is_never_significant(tmp_path):
    """40 documents a gets right and b wrong: McNemar p ~ 2e-12. As a deterministic strategy that
    is a significant win; as a learned one with one seed it is not, and the report says why."""
    tasks = {"t1": [1] * 40, "t2": [1] * 40}
    zeros = {"t1": [0] * 40, "t2": [0] * 40}
    base = _run(tmp_path / "base", "2024-01-01T00-00-00.0", "base", 0, zeros)
    fuse = _run(tmp_path / "fuse", "2024-01-01T00-00-00.1", "retrieve_fuse", 0, tasks)
    hub = _run(tmp_path / "hub", "2024-01-01T00-00-00.2", "lorahub", 0, tasks)
    settings = compare.Settings(bootstrap=500, permutations=500)
    c = compare.compare([fuse, hub, base], out_dir=tmp_path / "cmp", baseline=base, settings=settings, chart=False)
    pairs = {p.a: p for p in c.pairs}
    det, learned = pairs["ilora:retrieve_fuse@base"], pairs["ilora:lorahub@base"]
    assert [r.p_value for r in det.rows] == [r.p_value for r in learned.rows]
    assert max(r.p_value for r in det.rows) < 1e-10
    assert (det.sig_wins, learned.sig_wins) == (2, 0)
    assert det.interval_significant and not learned.interval_significant
    assert learned.interval.low > 0  # the documents alone would call it clear
    assert c.seed_status == {"ilora:retrieve_fuse@base": "deterministic", "ilora:lorahub@base": seeds_mod.ONE_SEED,
                             "ilora:base@base": "deterministic"}
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert f"| ilora:lorahub@base | 0 | {seeds_mod.ONE_SEED} |" in report
    assert "never (1 seed)" in report
    assert "retrieve_fuse, arrow" in report and "lorahub, ilora, single_best" in report  # which are deterministic
    assert "wins on 2 of 2 tasks" in learned.summary


def test_per_task_test_over_seeds_with_three_seeds_per_group(tmp_path):
    """Both groups ran seeds 1-5: the per-task test is the exact sign-flip test over the five
    seed differences, checked against an enumeration written out here."""
    rng = np.random.default_rng(5)
    paths, scores = [], {"ilora": [], "lorahub": []}
    for strategy, p in (("ilora", 0.7), ("lorahub", 0.5)):
        for seed in range(1, 6):
            values = (rng.uniform(size=20) < p + rng.normal(0, 0.1)).astype(int).tolist()
            scores[strategy].append(np.mean(values))
            paths.append(_run(tmp_path / f"{strategy}{seed}", f"2024-01-0{seed}T00-00-00.{strategy}", strategy, seed,
                              {"t": values}))
    c = compare.compare(paths, out_dir=None, baseline="lorahub", settings=compare.Settings(bootstrap=500))
    (row,) = c.pairs[0].rows
    assert row.test.endswith("over seeds")
    d = np.array(scores["ilora"]) - np.array(scores["lorahub"])
    d = d[d != 0]
    obs = abs(d.sum())
    flips = [abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-12
             for signs in itertools.product((1, -1), repeat=len(d))]
    assert row.p_value == pytest.approx(sum(flips) / len(flips))
    assert row.diff == pytest.approx(np.mean(scores["ilora"]) - np.mean(scores["lorahub"]))
    # the interval of the difference is the two-level one over the paired seeds
    assert "seeds paired, paired documents" in c.pairs[0].interval_design
    assert c.seed_status["ilora:ilora@base"] == "5 seeds"


def test_document_draws_have_the_bootstrap_spread():
    """Both ways a pool is resampled (multinomial over value categories when few, document indices
    otherwise) give resampled means with the bootstrap's sd: the values' plug-in sd / sqrt(n)."""
    rng = np.random.default_rng(3)
    few = rng.integers(0, 2, 200).astype(float)  # 2 categories: multinomial counts
    many = rng.normal(0, 1, 20)  # 20 distinct values: index draws
    for values in (few, many):
        st = stats.Stratum([values.size], stats.Side([values], [0]))
        pool = stats._Pool.of(st, 0)
        draws = pool.draw(20000, rng)[:, 0]
        assert draws.mean() == pytest.approx(values.mean(), abs=0.01)
        assert draws.std() == pytest.approx(values.std() / np.sqrt(values.size), rel=0.05)
    assert stats._Pool.of(stats.Stratum([200], stats.Side([few], [0])), 0)._few
    assert not stats._Pool.of(stats.Stratum([20], stats.Side([many], [0])), 0)._few
