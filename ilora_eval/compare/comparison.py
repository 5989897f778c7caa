"""The comparison itself: metric choice, seed means, means per metric kind, per-task tests against
a baseline group on the documents both scored, multiple-testing correction, two-level (seed, then
document) bootstrap intervals and adapter usage; `compare()` runs it all and writes the report."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from ilora_eval.errors import IloraError

from . import stats
from .labels import Group, assign_labels, make_groups, resolve_baseline, separating_settings
from .model import (
    ACCURACY,
    CORRECTION_NAMES,
    DEFAULT_ALPHA,
    DEFAULT_CONFIDENCE,
    DEFAULT_FILTERS,
    DEFAULT_METRICS,
    DEFAULT_OUT,
    DEFAULT_RESAMPLES,
    MEAN_CHECK_TOL,
    NO_ADAPTER,
    PROGRESS_FROM,
    TIE_TOL,
    Cell,
    Comparison,
    GroupInterval,
    MeanRow,
    Pair,
    PairRow,
    Settings,
    TaskChoice,
    plural,
)
from .pairing import Matched, Units, group_stratum, group_units, match, pair_stratum, run_scores, seed_order
from .results import NoRouting, NoSamples, Run, find_results_files, find_routing_log, load_run, read_routing_log
from .seeds import ONE_SEED, over_seeds, seed_status

__all__ = ["CORRECTION_NAMES", "DEFAULT_ALPHA", "DEFAULT_CONFIDENCE", "DEFAULT_FILTERS", "DEFAULT_METRICS",
           "DEFAULT_OUT", "DEFAULT_RESAMPLES", "NO_ADAPTER", "Cell", "Comparison", "MeanRow", "Settings",
           "adapter_usage", "compare", "plural"]


def _choose(task: str, runs: list[Run], metric_opt: str | None, filter_opt: str | None, notes: list[str],
            filter_missing: list[str]) -> TaskChoice | None:
    have = [r for r in runs if task in r.metrics]
    candidates = [metric_opt] if metric_opt else list(DEFAULT_METRICS)
    metric = next((m for m in candidates if all(m in r.metrics[task] for r in have)), None)
    if metric is None:
        metric = next((m for m in candidates if any(m in r.metrics[task] for r in have)), None)
    if metric is None:
        available = sorted({m for r in have for m in r.metrics[task]})
        if metric_opt:
            notes.append(f"{task}: no '{metric_opt}' metric (has {', '.join(available)}); left blank")
            return None
        metric = next(iter(have[0].metrics[task]))
        notes.append(f"{task}: none of {', '.join(DEFAULT_METRICS)} reported; using '{metric}'")
    with_metric = [r for r in have if metric in r.metrics[task]]
    present = list(dict.fromkeys(f for r in with_metric for f in r.metrics[task][metric]))
    in_all = [f for f in present if all(f in r.metrics[task][metric] for r in with_metric)]
    order = ([filter_opt] if filter_opt else []) + list(DEFAULT_FILTERS)
    filt = next((f for f in order if f in in_all), None) or next((f for f in order if f in present), None)
    if filt is None:
        filt = (in_all or present)[0]
    if filter_opt and filt != filter_opt:
        filter_missing.append(task)
    return TaskChoice(task, metric, filt)


def _choice_line(choices: list[TaskChoice], filter_opt: str | None, filter_missing: list[str]) -> str:
    counts: dict[tuple[str, str], int] = {}
    for ch in choices:
        counts[(ch.metric, ch.filter)] = counts.get((ch.metric, ch.filter), 0) + 1
    used = "; ".join(f"{m} with filter {f} ({plural(n, 'task')})" for (m, f), n in counts.items())
    rule = ((f"--filter {filter_opt}, else " if filter_opt else "")
            + " > ".join(DEFAULT_FILTERS) + " > the first reported")
    line = f"Scores: {used}. Filter order: {rule}; metric order: {' > '.join(DEFAULT_METRICS)} > the first reported."
    if filter_missing:
        line += (f" --filter {filter_opt} is absent for {plural(len(filter_missing), 'task')}: "
                 f"{', '.join(filter_missing)}.")
    return line


def _leaves(group: str, subtasks: dict[str, list[str]], depth: int = 0) -> list[str]:
    if depth > 50:
        return []
    out: list[str] = []
    for child in subtasks.get(group, []):
        if child in subtasks:
            out.extend(_leaves(child, subtasks, depth + 1))
        else:
            out.append(child)
    return out


def _cell(values: list[float | None]) -> Cell:
    if not values or any(v is None for v in values):
        return Cell(None, None, [v for v in values if v is not None])
    m, sd = stats.mean_sd(values)
    return Cell(m, sd, list(values))


def _run_means(run: Run, tasks: list[str], by_task: dict[str, TaskChoice]) -> tuple[float | None, float | None, int]:
    """(unweighted, weighted by n, n) mean of one run over `tasks`."""
    scores = [run.score(t, by_task[t].metric, by_task[t].filter) for t in tasks]
    if not tasks or any(s is None for s in scores):
        return None, None, 0
    ns = [run.n_eff.get(t) for t in tasks]
    if any(n is None for n in ns) or sum(ns) == 0:
        return sum(scores) / len(scores), None, 0
    return sum(scores) / len(scores), sum(s * n for s, n in zip(scores, ns)) / sum(ns), sum(ns)


def _mean_rows(name: str, tasks: list[str], groups: list[Group], by_task: dict[str, TaskChoice],
               kind: str) -> list[MeanRow]:
    unweighted: dict[str, Cell] = {}
    weighted: dict[str, Cell] = {}
    n_totals = []
    for g in groups:
        per_run = [_run_means(run, tasks, by_task) for run in g.runs]
        unweighted[g.label] = _cell([u for u, _, _ in per_run])
        weighted[g.label] = _cell([w for _, w, _ in per_run])
        n_totals += [n for _, w, n in per_run if w is not None]
    n_total = n_totals[0] if n_totals and len(set(n_totals)) == 1 else None
    return [MeanRow(name, "mean_unweighted", tasks, unweighted, n_total, kind),
            MeanRow(name, "mean_weighted", tasks, weighted, n_total, kind)]


def _kinds(tasks: list[str], by_task: dict[str, TaskChoice]) -> dict[str, list[str]]:
    """metric kind -> its tasks; the main kind (accuracy if present, else the largest) first."""
    kinds: dict[str, list[str]] = {}
    for t in tasks:
        kinds.setdefault(by_task[t].kind, []).append(t)
    main = ACCURACY if ACCURACY in kinds else max(kinds, key=lambda k: len(kinds[k]), default=ACCURACY)
    return {k: kinds[k] for k in sorted(kinds, key=lambda k: k != main)}


def _all_means(runs: list[Run], groups: list[Group], common: list[str], by_task: dict[str, TaskChoice],
               notes: list[str]) -> tuple[list[MeanRow], str]:
    """Means over tasks, one set per metric kind (perplexity never averaged with accuracy)."""
    kinds = _kinds(common, by_task)
    main = next(iter(kinds), ACCURACY)
    if len(kinds) > 1:
        notes.append("means over tasks are taken per metric kind and never across kinds: " + "; ".join(
            f"{k} ({plural(len(ts), 'task')}: {', '.join(ts)})" for k, ts in kinds.items())
            + f"; the summary and intervals use {main}")
    means = [row for k, ts in kinds.items() for row in _mean_rows("all", ts, groups, by_task, k)] or \
        _mean_rows("all", [], groups, by_task, main)
    subtasks: dict[str, list[str]] = {}
    for run in runs:
        for name, children in run.group_subtasks.items():
            subtasks.setdefault(name, list(children))
    for name in sorted(subtasks):
        members = sorted({t for t in _leaves(name, subtasks) if t in by_task})
        if not members or set(members) == set(by_task):
            continue
        for k, ts in _kinds([t for t in members if t in common], by_task).items():
            means += _mean_rows(name, ts, groups, by_task, k)
    if any(row.kind == "mean_weighted" and row.tasks and row.cells[g.label].mean is None
           for row in means for g in groups):
        notes.append("weighted mean n/a where a run lacks n-samples counts for a task")
    return means, main


class _UnitCache:
    """Each group's per-document values per task, read once; also checks them against the scores."""

    def __init__(self, notes: list[str]):
        self._cache: dict[tuple[str, str], Units | NoSamples] = {}
        self._notes = notes

    def get(self, group: Group, ch: TaskChoice) -> Units:
        key = (group.label, ch.task)
        if key not in self._cache:
            try:
                units = group_units(group, ch.task, ch.metric, ch.filter)
                self._check(group, ch)
                if units.note:
                    self._notes.append(units.note)
                self._cache[key] = units
            except NoSamples as err:
                self._cache[key] = err
        value = self._cache[key]
        if isinstance(value, NoSamples):
            raise value
        return value

    def _check(self, group: Group, ch: TaskChoice) -> None:
        for run in group.runs:
            docs = run.per_doc(ch.task, ch.metric, ch.filter)
            mean = sum(d.value for d in docs.values()) / len(docs)
            score = run.score(ch.task, ch.metric, ch.filter)
            if score is not None and abs(mean - score) > MEAN_CHECK_TOL:
                self._notes.append(
                    f"{run.label} / {ch.task}: per-document mean {mean:.6g} differs from the reported {ch.metric} "
                    f"{score:.6g} (metric not a mean of per-doc values, or samples from another run)"
                )


def _higher_is_better(runs: list[Run], ch: TaskChoice) -> bool:
    return next((r.higher[ch.task][ch.metric] for r in runs
                 if ch.metric in r.higher.get(ch.task, {})), True)


def _outcome(diff: float, higher: bool) -> str:
    if abs(diff) <= TIE_TOL:
        return "tie"
    return "win" if (diff > 0) == higher else "loss"


def _same_documents(a: Group, b: Group, task: str) -> str:
    """Without samples: '' when the runs look like they scored the same documents, else why not."""
    runs = a.runs + b.runs
    ns = {r.n_eff.get(task) for r in runs}
    limits = {str(r.config.get("limit")) for r in runs}
    if len(ns) > 1 or len(limits) > 1:
        what = f"n {' vs '.join(str(n) for n in sorted(ns, key=str))}" if len(ns) > 1 else \
            f"--limit {' vs '.join(sorted(limits))}"
        return f"not compared: different documents ({what}) and no --log_samples to pair them"
    return ""


def _doc_test(m: Matched, s: Settings) -> tuple[str, float]:
    if m.design == "paired":
        return stats.paired_test(m.a, m.b, s.permutations, s.seed)
    return stats.unpaired_test(m.a, m.b, s.permutations, s.seed)


def _seed_level_test(ua: Units, ub: Units, m: Matched, s: Settings) -> tuple[str, float]:
    """Per-task test over seeds: each run's score on the compared documents."""
    keys = m.keys if m.design == "paired" else None
    sa, sb = run_scores(ua, keys), run_scores(ub, keys)
    order = seed_order(ua, ub)
    if order is not None:
        return stats.seed_test(sa, [sb[i] for i in order], True, s.permutations, s.seed)
    # a deterministic group (one run): its one score against each seed of the other
    if len(sa) == 1:
        return stats.seed_test(sa * len(sb), sb, True, s.permutations, s.seed)
    if len(sb) == 1:
        return stats.seed_test(sa, sb * len(sa), True, s.permutations, s.seed)
    return stats.seed_test(sa, sb, False, s.permutations, s.seed)


def _row(a: Group, b: Group, ch: TaskChoice, cells, units: _UnitCache, s: Settings, status: dict[str, str],
         higher: bool) -> PairRow:
    ca, cb = cells[(ch.task, a.label)], cells[(ch.task, b.label)]
    try:
        ua, ub = units.get(a, ch), units.get(b, ch)
    except NoSamples as err:
        why = _same_documents(a, b, ch.task)
        if why:
            return PairRow(ch.task, ch.metric, ch.filter, ca.mean, cb.mean, None, "n/a", "n/a", None, "n/a", None,
                           note=why)
        diff = ca.mean - cb.mean
        return PairRow(ch.task, ch.metric, ch.filter, ca.mean, cb.mean, diff, _outcome(diff, higher), "n/a", None,
                       "n/a", None, note=f"no per-document values: {err}")
    m = match(ua, ub)
    if m.design == "none":
        return PairRow(ch.task, ch.metric, ch.filter, ca.mean, cb.mean, None, "n/a", "none", 0, "n/a", None,
                       note=m.note)
    mean_a, mean_b = (float(m.a.mean()), float(m.b.mean())) if m.design == "paired" else (ca.mean, cb.mean)
    if over_seeds(status[a.label], status[b.label], len(a.runs), len(b.runs)):
        test, p = _seed_level_test(ua, ub, m, s)
    else:
        test, p = _doc_test(m, s)
    n = len(m.a) if m.design == "paired" else len(m.a) + len(m.b)
    return PairRow(ch.task, ch.metric, ch.filter, mean_a, mean_b, mean_a - mean_b, _outcome(mean_a - mean_b, higher),
                   m.design, n, test, p, note=m.note)


def _seed_gate(a: Group, b: Group, status: dict[str, str]) -> str:
    one = [g.label for g in (a, b) if status[g.label] == ONE_SEED]
    return f"{ONE_SEED} ({', '.join(one)}): never significant" if one else ""


def _compare_pair(a: Group, b: Group, choices: list[TaskChoice], cells, units: _UnitCache, s: Settings,
                  status: dict[str, str], runs: list[Run], bar) -> Pair:
    pair = Pair(a.label, b.label, [], [], seed_note=_seed_gate(a, b, status))
    for ch in choices:
        if cells[(ch.task, a.label)].mean is None or cells[(ch.task, b.label)].mean is None:
            pair.excluded.append(ch.task)
            bar.update(1)
            continue
        row = _row(a, b, ch, cells, units, s, status, _higher_is_better(runs, ch))
        row.gated = bool(pair.seed_note)
        pair.rows.append(row)
        bar.update(1)
        if row.result == "n/a":
            pair.not_compared.append(ch.task)
            continue
        pair.wins += row.result == "win"
        pair.ties += row.result == "tie"
        pair.losses += row.result == "loss"
        pair.no_p += row.p_value is None
    return pair


def _correct(pairs: list[Pair], s: Settings) -> int:
    """Adjusts every p-value of the report as one family; returns the number of tests."""
    tested = [r for p in pairs for r in p.rows if r.p_value is not None]
    for name, fn in (("holm", stats.holm), ("bh", stats.benjamini_hochberg)):
        for r, adj in zip(tested, fn([r.p_value for r in tested])):
            setattr(r, f"p_{name}", adj)
    for r in tested:
        adjusted = r.p_holm if s.correction == "holm" else r.p_bh
        r.significant = adjusted < s.alpha and r.result in ("win", "loss") and not r.gated
    for p in pairs:
        p.sig_wins = sum(r.significant and r.result == "win" for r in p.rows)
        p.sig_losses = sum(r.significant and r.result == "loss" for r in p.rows)
    return len(tested)


def _pair_interval(pair: Pair, a: Group, b: Group, common: list[TaskChoice], units: _UnitCache, s: Settings) -> None:
    """Two-level bootstrap of the difference of the group means over the main kind's common tasks
    that this pair can compare (documents both scored, or random draws of one pool)."""
    rows = {r.task: r for r in pair.rows}
    usable = [ch for ch in common if ch.task in rows and rows[ch.task].result != "n/a"]
    skipped = [ch.task for ch in common if ch not in usable]
    try:
        matched = [(units.get(a, ch), units.get(b, ch)) for ch in usable]
        strata = [pair_stratum(ua, ub, match(ua, ub)) for ua, ub in matched]
    except NoSamples as err:
        pair.interval_note = f"interval n/a: {err}"
        return
    if not strata:
        pair.interval_note = "interval n/a: no task both groups can be compared on"
        return
    pair.interval = stats.two_level_bootstrap(strata, s.bootstrap, s.seed, s.confidence)
    pair.interval_tasks = len(strata)
    designs = {match(ua, ub).design for ua, ub in matched}
    docs = "paired documents" if designs == {"paired"} else "unpaired documents" if designs == {"unpaired"} \
        else "documents paired where shared"
    seeds = "seeds paired" if strata[0].paired_seeds else "seeds drawn per group"
    pair.interval_design = f"two-level bootstrap: {seeds}, {docs}"
    if skipped:
        pair.interval_note = f"interval leaves out {plural(len(skipped), 'task')} not compared: {', '.join(skipped)}"


def _summary(pair: Pair, s: Settings, n_tests: int) -> str:
    compared = pair.wins + pair.ties + pair.losses
    text = (f"{pair.a} vs {pair.b}: wins on {pair.wins} of {plural(compared, 'task')} "
            f"({plural(pair.wins, 'win')}, {plural(pair.ties, 'tie')}, {plural(pair.losses, 'loss')} by seed means; "
            f"{plural(pair.sig_wins, 'win')} and {plural(pair.sig_losses, 'loss')} significant at {s.alpha:g}, "
            f"{CORRECTION_NAMES[s.correction]} over {plural(n_tests, 'test')})")
    if pair.interval is not None:
        iv = pair.interval
        text += (f"; mean difference {iv.estimate:+.4f}, {s.confidence:.0%} CI [{iv.low:+.4f}, {iv.high:+.4f}] "
                 f"({pair.interval_design})")
    extras = []
    if pair.seed_note:
        extras.append(pair.seed_note)
    if pair.no_p:
        extras.append(f"p-value n/a for {plural(pair.no_p, 'task')} (no per-document samples)")
    if pair.not_compared:
        extras.append(f"{plural(len(pair.not_compared), 'task')} not compared (no shared documents): "
                      f"{', '.join(pair.not_compared)}")
    if pair.excluded:
        extras.append(f"{plural(len(pair.excluded), 'task')} not in both groups excluded: {', '.join(pair.excluded)}")
    return text + ("; " + "; ".join(extras) if extras else "")


def _group_interval(g: Group, mean_row: MeanRow | None, common: list[TaskChoice], units: _UnitCache,
                    s: Settings, status: str) -> GroupInterval:
    cell = mean_row.cells[g.label] if mean_row else Cell(None, None, [])
    out = GroupInterval(g.label, cell.mean, cell.sd, cell.values, None)
    if not common:
        out.note = "no task common to every group"
        return out
    try:
        strata = [group_stratum(units.get(g, ch)) for ch in common]
    except NoSamples as err:
        out.note = f"interval n/a: {err}"
        return out
    out.interval = stats.two_level_bootstrap(strata, s.bootstrap, s.seed, s.confidence)
    if status == ONE_SEED:
        out.note = f"{ONE_SEED}: the interval covers documents only"
    return out


def _usage_shares(weights: list[float], adapters: list[str]) -> dict[str, float]:
    total = sum(abs(w) for w in weights)
    return {a: abs(w) / total for a, w in zip(adapters, weights)} if total > 0 else {NO_ADAPTER: 1.0}


def adapter_usage(groups: list[Group], notes: list[str]) -> list[dict]:
    """Rows (group, run, task, adapter, usage, docs): each routed document spreads 1 over its
    adapters in proportion to |w| / sum |w|; a document with no adapter (or all weights 0) counts
    for `(none)`. The usage column therefore sums to the number of routed documents."""
    rows: dict[tuple[str, str, str, str], float] = {}
    docs: dict[tuple[str, str, str], int] = {}
    ilora_runs, found = 0, 0
    for g in groups:
        for run in (r for r in g.runs if r.is_ilora):
            ilora_runs += 1
            try:
                path = find_routing_log(run)
                if path is None:
                    continue
                records = read_routing_log(path)
            except NoRouting as err:
                notes.append(f"{run.label}: routing log not used: {err}")
                continue
            found += 1
            for rec in records:
                key = (g.label, run.label, rec["task"])
                docs[key] = docs.get(key, 0) + 1
                for adapter, share in _usage_shares(rec["weights"], rec["adapters"]).items():
                    rows[(*key, adapter)] = rows.get((*key, adapter), 0.0) + share
    if ilora_runs and found < ilora_runs:
        notes.append(f"routing logs found for {found} of {plural(ilora_runs, 'ilora run')} (beside each results file "
                     "as ilora_routing_<timestamp>.jsonl, or the config's ilora_routing_log)")
    return [{"group": k[0], "run": k[1], "task": k[2], "adapter": k[3], "usage": v, "docs": docs[k[:3]]}
            for k, v in rows.items()]


def _check_settings(paths: list[str], s: Settings) -> None:
    if not paths:
        raise IloraError("no results given; pass lm-eval results JSON files or directories")
    if not 0 < s.alpha < 1:
        raise IloraError(f"--alpha {s.alpha} is outside (0, 1); pass e.g. --alpha 0.05")
    if not 0 < s.confidence < 1:
        raise IloraError(f"--confidence {s.confidence} is outside (0, 1); pass e.g. --confidence 0.95")
    if s.permutations < 1 or s.bootstrap < 1:
        raise IloraError("--permutations and --bootstrap must be at least 1")
    if s.correction not in CORRECTION_NAMES:
        raise IloraError(f"--correction {s.correction!r} is unknown; use one of: {', '.join(CORRECTION_NAMES)}")


def _choices(runs: list[Run], metric: str | None, filter: str | None, notes: list[str]) -> tuple[list[TaskChoice], str]:
    tasks = sorted({t for r in runs for t in r.metrics})
    if not tasks:
        raise IloraError("none of the results files holds any task scores; pass results from finished lm_eval runs")
    filter_missing: list[str] = []
    choices = [c for c in (_choose(t, runs, metric, filter, notes, filter_missing) for t in tasks) if c is not None]
    if not choices:
        raise IloraError(f"no task reports the metric '{metric}'; drop --metric or pick one the results contain")
    return choices, _choice_line(choices, filter, filter_missing)


def _pairs_of(groups: list[Group], base_group: Group | None, notes: list[str]) -> list[tuple[Group, Group]]:
    if len(groups) < 2:
        notes.append("only one group of runs: nothing to compare")
        return []
    if base_group is not None:
        return [(g, base_group) for g in groups if g is not base_group]
    return [(groups[i], groups[j]) for i in range(len(groups)) for j in range(i + 1, len(groups))]


def _load(paths: list[str], labels: list[str] | None, s: Settings) -> tuple[list[Run], list[Group], list[str]]:
    runs = [load_run(p) for p in find_results_files(paths)]
    notes = assign_labels(runs, labels, s.group_by)
    groups = make_groups(runs, s.group_by)
    for run in runs:
        if not run.metrics:
            notes.append(f"{run.label} ({run.path}): no task scores in this results file")
    return runs, groups, notes


def _cells(runs: list[Run], groups: list[Group], choices: list[TaskChoice], notes: list[str]) -> dict:
    cells = {(ch.task, g.label): _cell([r.score(ch.task, ch.metric, ch.filter) for r in g.runs])
             for ch in choices for g in groups}
    for ch in choices:
        missing = [r.label for r in runs if r.score(ch.task, ch.metric, ch.filter) is None]
        if missing:
            notes.append(f"{ch.task}: no {ch.metric} ({ch.filter}) in {', '.join(missing)}; blank cell for its group, "
                         "excluded from the means and from the comparisons with it")
    return cells


def _compare_all(c: Comparison, pairs_of: list[tuple[Group, Group]], units: _UnitCache) -> None:
    """The pairs' per-task rows, corrections, intervals and summaries, and the groups' intervals."""
    s = c.settings
    # a seed-averaged task's permutation test takes ~0.15 s: show progress when there are many
    n_compared = len(pairs_of) * len(c.choices)
    with tqdm(total=n_compared, desc="per-task tests", unit="task", leave=False,
              disable=None if n_compared >= PROGRESS_FROM else True) as bar:
        c.pairs = [_compare_pair(a, b, c.choices, c.cells, units, s, c.seed_status, c.runs, bar) for a, b in pairs_of]
    c.n_tests = _correct(c.pairs, s)
    by_task = {ch.task: ch for ch in c.choices}
    common = [by_task[t] for t in (c.overall.tasks if c.overall else [])]
    for pair, (a, b) in zip(c.pairs, pairs_of):
        _pair_interval(pair, a, b, common, units, s)
        pair.summary = _summary(pair, s, c.n_tests)
    c.intervals = [_group_interval(g, c.overall, common, units, s, c.seed_status[g.label]) for g in c.groups]
    c.notes += [f"{gi.group}: {gi.note}" for gi in c.intervals if gi.note]
    c.notes += [f"{p.a} vs {p.b}: {p.interval_note}" for p in c.pairs if p.interval_note]


def compare(paths: list[str], out_dir: str | Path | None = DEFAULT_OUT, labels: list[str] | None = None,
            metric: str | None = None, filter: str | None = None,
            baseline: str | None = None, settings: Settings | None = None, chart: bool = True,
            title: str | None = None, epilogue: str = "", overwrite: bool = True) -> Comparison:
    """Compare lm-eval results; writes the report into `out_dir` unless it is None. With
    overwrite=False an existing non-empty `out_dir` is refused (the CLI's default)."""
    s = settings or Settings()
    _check_settings(paths, s)
    if out_dir is not None and not overwrite:
        from .report import check_out_dir

        check_out_dir(Path(out_dir))
    runs, groups, notes = _load(paths, labels, s)
    choices, choice_line = _choices(runs, metric, filter, notes)
    by_task = {c.task: c for c in choices}
    base_group, base_note = resolve_baseline(baseline, groups) if baseline is not None else (None, None)
    if base_note:
        notes.append(base_note)
    cells = _cells(runs, groups, choices, notes)
    common_tasks = [c.task for c in choices if all(cells[(c.task, g.label)].mean is not None for g in groups)]
    means, main_kind = _all_means(runs, groups, common_tasks, by_task, notes)
    pairs_of = _pairs_of(groups, base_group, notes)
    result = Comparison(runs, groups, choices, cells, means, [], base_group.label if base_group else None,
                        [], [], notes, s, choice_line, separation=separating_settings(groups),
                        seed_status={g.label: seed_status(g) for g in groups}, main_kind=main_kind)
    _compare_all(result, pairs_of, _UnitCache(notes))
    result.usage = adapter_usage(groups, notes)
    if out_dir is not None:
        from .report import write_report

        write_report(result, Path(out_dir), chart=chart, title=title, epilogue=epilogue)
    return result
