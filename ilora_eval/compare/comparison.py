"""The comparison itself: metric choice, seed means, per-task tests against a baseline group,
multiple-testing correction, bootstrap intervals and adapter usage; `compare()` runs it all and
writes the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ilora_eval.errors import IloraError

from . import stats
from .labels import Group, assign_labels, make_groups, resolve_baseline
from .pairing import Units, group_units, match
from .results import NoRouting, NoSamples, Run, find_results_files, find_routing_log, load_run, read_routing_log

DEFAULT_METRICS = ("exact_match", "acc_norm", "acc")
# The task pack's generative tasks report both; strict-match is the paper's (LoraHub's) exact match.
DEFAULT_FILTERS = ("strict-match", "none")
DEFAULT_OUT = "results/compare"
DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 10000
DEFAULT_CONFIDENCE = 0.95
# A difference whose size is at most this counts as a tie (guards against float noise only).
TIE_TOL = 1e-12
# Per-document mean vs. reported score: larger gaps get a note.
MEAN_CHECK_TOL = 1e-6
NO_ADAPTER = "(none)"
PROGRESS_FROM = 50
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


@dataclass
class TaskChoice:
    task: str
    metric: str
    filter: str


@dataclass
class Cell:
    """One group's score: mean and sd over its runs (seeds), and each run's value."""

    mean: float | None
    sd: float | None
    values: list[float]


@dataclass
class MeanRow:
    group: str  # "all" or an lm-eval group name
    kind: str  # "mean_unweighted" | "mean_weighted"
    tasks: list[str]
    cells: dict[str, Cell]  # group label -> cell
    n_total: int | None


@dataclass
class PairRow:
    task: str
    metric: str
    filter: str
    mean_a: float
    mean_b: float
    diff: float
    result: str  # win | tie | loss (for group A)
    design: str  # paired | unpaired | n/a
    n_docs: int | None
    test: str
    p_value: float | None
    p_holm: float | None = None
    p_bh: float | None = None
    significant: bool = False
    note: str = ""


@dataclass
class Pair:
    a: str
    b: str
    rows: list[PairRow]
    excluded: list[str]
    wins: int = 0
    ties: int = 0
    losses: int = 0
    sig_wins: int = 0
    sig_losses: int = 0
    no_p: int = 0
    interval: stats.Interval | None = None
    interval_design: str = ""
    interval_note: str = ""
    summary: str = ""


@dataclass
class GroupInterval:
    group: str
    mean: float | None
    sd: float | None
    seed_means: list[float]
    interval: stats.Interval | None
    note: str = ""


@dataclass
class Settings:
    alpha: float = DEFAULT_ALPHA
    correction: str = "holm"
    confidence: float = DEFAULT_CONFIDENCE
    permutations: int = DEFAULT_RESAMPLES
    bootstrap: int = DEFAULT_RESAMPLES
    seed: int = 0
    group_by: str = "label"


@dataclass
class Comparison:
    runs: list[Run]
    groups: list[Group]
    choices: list[TaskChoice]
    cells: dict[tuple[str, str], Cell]  # (task, group label) -> cell
    means: list[MeanRow]
    pairs: list[Pair]
    baseline: str | None
    intervals: list[GroupInterval]
    usage: list[dict]
    notes: list[str]
    settings: Settings
    choice_line: str = ""
    n_tests: int = 0
    out_dir: Path | None = None
    written: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Group labels, in order (a group of one run carries that run's label without its seed)."""
        return [g.label for g in self.groups]

    def group(self, label: str) -> Group:
        return next(g for g in self.groups if g.label == label)


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


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


def _mean_rows(name: str, tasks: list[str], groups: list[Group], by_task: dict[str, TaskChoice]) -> list[MeanRow]:
    unweighted: dict[str, Cell] = {}
    weighted: dict[str, Cell] = {}
    n_totals = []
    for g in groups:
        per_run_u: list[float | None] = []
        per_run_w: list[float | None] = []
        for run in g.runs:
            scores = [run.score(t, by_task[t].metric, by_task[t].filter) for t in tasks]
            if not tasks or any(s is None for s in scores):
                per_run_u.append(None)
                per_run_w.append(None)
                continue
            per_run_u.append(sum(scores) / len(scores))
            ns = [run.n_eff.get(t) for t in tasks]
            if any(n is None for n in ns) or sum(ns) == 0:
                per_run_w.append(None)
            else:
                per_run_w.append(sum(s * n for s, n in zip(scores, ns)) / sum(ns))
                n_totals.append(sum(ns))
        unweighted[g.label] = _cell(per_run_u)
        weighted[g.label] = _cell(per_run_w)
    n_total = n_totals[0] if n_totals and len(set(n_totals)) == 1 else None
    return [MeanRow(name, "mean_unweighted", tasks, unweighted, n_total),
            MeanRow(name, "mean_weighted", tasks, weighted, n_total)]


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


def _compare_pair(a: Group, b: Group, choices: list[TaskChoice], cells, units: _UnitCache, s: Settings,
                  bar) -> Pair:
    pair = Pair(a.label, b.label, rows=[], excluded=[])
    for ch in choices:
        bar.update(1)
        ca, cb = cells[(ch.task, a.label)], cells[(ch.task, b.label)]
        if ca.mean is None or cb.mean is None:
            pair.excluded.append(ch.task)
            continue
        diff = ca.mean - cb.mean
        higher = next((r.higher[ch.task][ch.metric] for r in a.runs + b.runs
                       if ch.metric in r.higher.get(ch.task, {})), True)
        result = "tie" if abs(diff) <= TIE_TOL else "win" if (diff > 0) == higher else "loss"
        row = PairRow(ch.task, ch.metric, ch.filter, ca.mean, cb.mean, diff, result, "n/a", None, "n/a", None)
        try:
            m = match(units.get(a, ch), units.get(b, ch))
        except NoSamples as err:
            row.note = str(err)
        else:
            row.design, row.note = m.design, m.note
            row.n_docs = len(m.a) if m.design == "paired" else len(m.a) + len(m.b)
            if m.design == "paired":
                row.test, row.p_value = stats.paired_test(m.a, m.b, s.permutations, s.seed)
            else:
                row.test, row.p_value = stats.unpaired_test(m.a, m.b, s.permutations, s.seed)
        pair.rows.append(row)
    return pair


def _correct(pairs: list[Pair], s: Settings) -> int:
    """Holm and BH over every per-task test of the report (one family); returns the family size."""
    rows = [r for p in pairs for r in p.rows if r.p_value is not None]
    ps = [r.p_value for r in rows]
    for r, ph, pb in zip(rows, stats.holm(ps), stats.benjamini_hochberg(ps)):
        r.p_holm, r.p_bh = ph, pb
    for pair in pairs:
        for r in pair.rows:
            adjusted = r.p_holm if s.correction == "holm" else r.p_bh
            r.significant = adjusted is not None and adjusted < s.alpha and r.result != "tie"
            if r.result == "win":
                pair.wins += 1
                pair.sig_wins += r.significant
            elif r.result == "loss":
                pair.losses += 1
                pair.sig_losses += r.significant
            else:
                pair.ties += 1
            pair.no_p += r.p_value is None
    return len(rows)


def _pair_interval(pair: Pair, a: Group, b: Group, common: list[TaskChoice], units: _UnitCache, s: Settings) -> None:
    strata, designs = [], set()
    try:
        for ch in common:
            m = match(units.get(a, ch), units.get(b, ch))
            designs.add(m.design)
            strata.append((m.a - m.b,) if m.design == "paired" else (m.a, m.b))
    except NoSamples as err:
        pair.interval_note = f"interval n/a: {err}"
        return
    if not strata:
        pair.interval_note = "interval n/a: no task common to every group"
        return
    pair.interval = stats.stratified_bootstrap(strata, s.bootstrap, s.seed, s.confidence)
    pair.interval_design = "paired" if designs == {"paired"} else "unpaired" if designs == {"unpaired"} else \
        f"paired for {sum(len(x) == 1 for x in strata)} tasks, unpaired for {sum(len(x) == 2 for x in strata)}"


def _summary(pair: Pair, s: Settings, n_tests: int) -> str:
    text = (f"{pair.a} vs {pair.b}: {plural(pair.wins, 'win')}, {plural(pair.ties, 'tie')}, "
            f"{plural(pair.losses, 'loss')} ({plural(pair.sig_wins, 'win')} and {plural(pair.sig_losses, 'loss')} "
            f"significant at {s.alpha:g}, {CORRECTION_NAMES[s.correction]} over {plural(n_tests, 'test')})")
    if pair.interval is not None:
        iv = pair.interval
        text += (f"; mean difference {iv.estimate:+.4f}, {s.confidence:.0%} CI [{iv.low:+.4f}, {iv.high:+.4f}] "
                 f"({pair.interval_design} bootstrap)")
    extras = []
    if pair.no_p:
        extras.append(f"p-value n/a for {plural(pair.no_p, 'task')} (no per-document samples)")
    if pair.excluded:
        extras.append(f"{plural(len(pair.excluded), 'task')} not in both groups excluded: {', '.join(pair.excluded)}")
    return text + ("; " + "; ".join(extras) if extras else "")


def _group_interval(g: Group, mean_row: MeanRow | None, common: list[TaskChoice], units: _UnitCache,
                    s: Settings) -> GroupInterval:
    cell = mean_row.cells[g.label] if mean_row else Cell(None, None, [])
    out = GroupInterval(g.label, cell.mean, cell.sd, cell.values, None)
    if not common:
        out.note = "no task common to every group"
        return out
    try:
        strata = [(_values(units.get(g, ch)),) for ch in common]
    except NoSamples as err:
        out.note = f"interval n/a: {err}"
        return out
    out.interval = stats.stratified_bootstrap(strata, s.bootstrap, s.seed, s.confidence)
    return out


def _values(u: Units) -> np.ndarray:
    return np.fromiter(u.values.values(), float, len(u.values))


def adapter_usage(groups: list[Group], notes: list[str]) -> list[dict]:
    """Rows (group, run, task, adapter, usage, docs): each routed document spreads 1 over its
    adapters in proportion to |w| / sum |w|; a document with no adapter (or all weights 0) counts
    for `(none)`. The usage column therefore sums to the number of routed documents."""
    rows: dict[tuple[str, str, str, str], float] = {}
    docs: dict[tuple[str, str, str], int] = {}
    ilora_runs, found = 0, 0
    for g in groups:
        for run in g.runs:
            if not run.is_ilora:
                continue
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
                total = sum(abs(w) for w in rec["weights"])
                shares = ({a: abs(w) / total for a, w in zip(rec["adapters"], rec["weights"])} if total > 0
                          else {NO_ADAPTER: 1.0})
                for adapter, share in shares.items():
                    rows[(*key, adapter)] = rows.get((*key, adapter), 0.0) + share
    if ilora_runs and found < ilora_runs:
        notes.append(f"routing logs found for {found} of {plural(ilora_runs, 'ilora run')} (beside each results file "
                     "as ilora_routing_<timestamp>.jsonl, or the config's ilora_routing_log)")
    return [{"group": k[0], "run": k[1], "task": k[2], "adapter": k[3], "usage": v, "docs": docs[k[:3]]}
            for k, v in rows.items()]


def compare(paths: list[str], out_dir: str | Path | None = DEFAULT_OUT, labels: list[str] | None = None,
            metric: str | None = None, filter: str | None = None,
            baseline: str | None = None, settings: Settings | None = None, chart: bool = True,
            title: str | None = None, epilogue: str = "") -> Comparison:
    """Compare lm-eval results; writes the report into `out_dir` unless it is None."""
    s = settings or Settings()
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
    runs = [load_run(p) for p in find_results_files(paths)]
    notes = assign_labels(runs, labels, s.group_by)
    groups = make_groups(runs, s.group_by)
    for run in runs:
        if not run.metrics:
            notes.append(f"{run.label} ({run.path}): no task scores in this results file")
    tasks = sorted({t for r in runs for t in r.metrics})
    if not tasks:
        raise IloraError("none of the results files holds any task scores; pass results from finished lm_eval runs")
    filter_missing: list[str] = []
    choices = [c for c in (_choose(t, runs, metric, filter, notes, filter_missing) for t in tasks) if c is not None]
    if not choices:
        raise IloraError(f"no task reports the metric '{metric}'; drop --metric or pick one the results contain")
    by_task = {c.task: c for c in choices}
    base_group, base_note = resolve_baseline(baseline, groups) if baseline is not None else (None, None)
    if base_note:
        notes.append(base_note)

    cells = {(ch.task, g.label): _cell([r.score(ch.task, ch.metric, ch.filter) for r in g.runs])
             for ch in choices for g in groups}
    for ch in choices:
        missing = [r.label for r in runs if r.score(ch.task, ch.metric, ch.filter) is None]
        if missing:
            notes.append(f"{ch.task}: no {ch.metric} ({ch.filter}) in {', '.join(missing)}; blank cell for its group, "
                         "excluded from the means and from the comparisons with it")
    common_tasks = [c.task for c in choices if all(cells[(c.task, g.label)].mean is not None for g in groups)]
    means = _mean_rows("all", common_tasks, groups, by_task)
    subtasks: dict[str, list[str]] = {}
    for run in runs:
        for name, children in run.group_subtasks.items():
            subtasks.setdefault(name, list(children))
    for name in sorted(subtasks):
        members = sorted({t for t in _leaves(name, subtasks) if t in by_task})
        if not members or set(members) == set(by_task):
            continue
        means += _mean_rows(name, [t for t in members if t in common_tasks], groups, by_task)
    if any(row.kind == "mean_weighted" and row.tasks and row.cells[g.label].mean is None
           for row in means for g in groups):
        notes.append("weighted mean n/a where a run lacks n-samples counts for a task")

    if len(groups) < 2:
        pairs_of: list[tuple[Group, Group]] = []
        notes.append("only one group of runs: nothing to compare")
    elif base_group is not None:
        pairs_of = [(g, base_group) for g in groups if g is not base_group]
    else:
        pairs_of = [(groups[i], groups[j]) for i in range(len(groups)) for j in range(i + 1, len(groups))]
    units = _UnitCache(notes)
    # a seed-averaged task's permutation test takes ~0.15 s: show progress when there are many
    n_compared = len(pairs_of) * len(choices)
    with tqdm(total=n_compared, desc="per-task tests", unit="task", leave=False,
              disable=None if n_compared >= PROGRESS_FROM else True) as bar:
        pairs = [_compare_pair(a, b, choices, cells, units, s, bar) for a, b in pairs_of]
    n_tests = _correct(pairs, s)
    common = [by_task[t] for t in common_tasks]
    for pair, (a, b) in zip(pairs, pairs_of):
        _pair_interval(pair, a, b, common, units, s)
        pair.summary = _summary(pair, s, n_tests)
    overall = next((m for m in means if m.group == "all" and m.kind == "mean_unweighted"), None)
    intervals = [_group_interval(g, overall, common, units, s) for g in groups]
    notes += [f"{gi.group}: {gi.note}" for gi in intervals if gi.note]
    notes += [f"{p.a} vs {p.b}: {p.interval_note}" for p in pairs if p.interval_note]
    usage = adapter_usage(groups, notes)

    result = Comparison(runs, groups, choices, cells, means, pairs, base_group.label if base_group else None,
                        intervals, usage, notes, s, _choice_line(choices, filter, filter_missing), n_tests)
    if out_dir is not None:
        from .report import write_report

        write_report(result, Path(out_dir), chart=chart, title=title, epilogue=epilogue)
    return result
