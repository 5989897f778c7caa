"""`ilora-eval compare RESULTS...`: leaderboard table, wins/ties/losses and a chart.

Reads lm-eval results JSONs (from `ilora` runs and stock `hf` runs alike) and writes, into
`--out` (default `results/compare`):

* `table.md`, `table.csv`: one row per task, one column per run, plus group rows (mean over
  the tasks every run has, unweighted and weighted by the `n-samples` effective counts) for
  all tasks and for each lm-eval group present;
* `wins.md`, `wins.csv`: per pair of runs (or `--baseline` against every other run) and per
  task, both scores, the difference, and a paired significance test over documents matched
  by `doc_id` in the `--log_samples` JSONL files; plus one summary line per pair;
* `chart.png`: grouped bar chart, tasks x runs.

Runs are labelled from their results `config`: `ilora:<strategy>(<args>)@<base model>` for
our model, where <args> are the strategy arguments given in model_args or differing between
the compared runs of that strategy, and `hf@<base model>` (or `hf(peft=<adapter>)@<base model>`)
for stock runs. Equal labels get `#2`, `#3`...; `--label` overrides them in input order.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilora_eval import compare_stats
from ilora_eval.errors import IloraError

DEFAULT_METRICS = ("exact_match", "acc_norm", "acc")
DEFAULT_FILTER = "none"
DEFAULT_OUT = "results/compare"
DEFAULT_ALPHA = 0.05
DEFAULT_PERMUTATIONS = 10000
# A difference whose size is at most this counts as a tie (guards against float noise only).
TIE_TOL = 1e-12
# Per-document mean vs. reported score: larger gaps get a note.
MEAN_CHECK_TOL = 1e-6


# --------------------------------------------------------------------------- loading


class _NoSamples(Exception):
    """Per-document values unavailable for a run/task; the message says why."""


@dataclass
class Run:
    path: Path
    data: dict
    label: str = ""
    # task -> metric -> filter -> value (JSON order kept: "first filter present")
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    stderr: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    n_eff: dict[str, int] = field(default_factory=dict)
    higher: dict[str, dict[str, bool]] = field(default_factory=dict)
    group_subtasks: dict[str, list[str]] = field(default_factory=dict)
    _per_doc: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    def score(self, task: str, metric: str, filt: str) -> float | None:
        return self.metrics.get(task, {}).get(metric, {}).get(filt)

    def samples_path(self, task: str) -> Path:
        """Where lm-eval 0.4.13 writes this run's samples for `task` (same timestamp)."""
        stem = self.path.stem
        date_id = stem.rsplit("_", 1)[1] if "_" in stem else stem
        return self.path.parent / f"samples_{task}_{date_id}.jsonl"

    def per_doc(self, task: str, metric: str, filt: str) -> dict[Any, float]:
        """doc_id -> per-document metric value; raises _NoSamples with the reason."""
        key = (task, metric, filt)
        if key not in self._per_doc:
            try:
                self._per_doc[key] = self._read_per_doc(task, metric, filt)
            except _NoSamples as err:
                self._per_doc[key] = err
        value = self._per_doc[key]
        if isinstance(value, _NoSamples):
            raise value
        return value

    def _read_per_doc(self, task: str, metric: str, filt: str) -> dict[Any, float]:
        path = self.samples_path(task)
        if not path.is_file():
            raise _NoSamples(f"no {path.name} beside {self.path.name} (rerun lm_eval with --log_samples)")
        values: dict[Any, float] = {}
        other_filters: set[str] = set()
        try:
            with path.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        raise _NoSamples(f"{path.name} line {lineno} is not valid JSON") from None
                    if not isinstance(rec, dict) or "doc_id" not in rec:
                        raise _NoSamples(f"{path.name} line {lineno} has no doc_id")
                    rec_filter = rec.get("filter", filt)
                    if rec_filter != filt:
                        other_filters.add(str(rec_filter))
                        continue
                    if metric not in rec:
                        raise _NoSamples(f"{path.name} line {lineno} has no '{metric}' value")
                    value = rec[metric]
                    if not isinstance(value, (int, float)):
                        raise _NoSamples(f"per-document '{metric}' values in {path.name} are not numbers")
                    doc_id = rec["doc_id"]
                    try:
                        hash(doc_id)
                    except TypeError:
                        doc_id = json.dumps(doc_id, sort_keys=True)
                    values.setdefault(doc_id, float(value))
        except OSError as err:
            raise _NoSamples(f"cannot read {path.name}: {err.strerror}") from None
        if not values:
            extra = f" (filters present: {', '.join(sorted(other_filters))})" if other_filters else ""
            raise _NoSamples(f"{path.name} has no records for filter '{filt}'{extra}")
        return values


def find_results_files(paths: list[str]) -> list[Path]:
    """Each argument: a results JSON, or a directory searched recursively for results_*.json."""
    found: list[Path] = []
    seen: set[Path] = set()
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files = sorted(p.rglob("results_*.json"))
            if not files:
                raise IloraError(
                    f"{p}: no results_*.json found under this directory; "
                    "pass the --output_path of an lm_eval run or a results JSON file"
                )
        elif p.is_file():
            files = [p]
        else:
            raise IloraError(f"{p}: no such file or directory; pass an lm-eval results JSON or a directory holding them")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found


def load_run(path: Path) -> Run:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise IloraError(f"cannot read {path} ({err}); pass a readable lm-eval results JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise IloraError(
            f"{path} is not valid JSON ({err.msg}, line {err.lineno}); pass an lm-eval results_*.json file"
        ) from None
    results = data.get("results") if isinstance(data, dict) else None
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not isinstance(config, dict) or not all(
        isinstance(v, dict) for v in results.values()
    ):
        raise IloraError(
            f"{path} is not an lm-eval results file (needs top-level 'results' and 'config' objects); "
            "pass the results_*.json written by lm_eval --output_path"
        )
    run = Run(path=path, data=data)
    subtasks = data.get("group_subtasks") or {}
    if isinstance(subtasks, dict):
        run.group_subtasks = {g: list(ch) for g, ch in subtasks.items() if isinstance(ch, list) and ch}
    group_names = set(run.group_subtasks) | set(data.get("groups") or {})
    n_samples = data.get("n-samples") or {}
    hib = data.get("higher_is_better") or {}
    for task, entry in results.items():
        if task in group_names:
            continue
        metrics: dict[str, dict[str, float]] = {}
        errs: dict[tuple[str, str], float] = {}
        for key, value in entry.items():
            if "," not in key:
                continue
            metric, filt = key.split(",", 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if metric.endswith("_stderr"):
                errs[(metric[: -len("_stderr")], filt)] = float(value)
            else:
                metrics.setdefault(metric, {})[filt] = float(value)
        if not metrics:
            continue
        run.metrics[task] = metrics
        run.stderr[task] = errs
        ns = n_samples.get(task)
        if isinstance(ns, dict):
            ns = ns.get("effective", ns.get("original"))
        if isinstance(ns, (int, float)) and not isinstance(ns, bool):
            run.n_eff[task] = int(ns)
        if isinstance(hib.get(task), dict):
            run.higher[task] = {m: bool(v) for m, v in hib[task].items() if isinstance(v, bool)}
    return run


# --------------------------------------------------------------------------- labels


def parse_model_args(model_args: Any) -> dict[str, Any]:
    """`k=v,k2=v2` (or a dict) -> dict, the way lm-eval parses --model_args."""
    if isinstance(model_args, dict):
        return dict(model_args)
    if not isinstance(model_args, str):
        return {}
    out: dict[str, Any] = {}
    for part in model_args.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _short_name(name: Any) -> str:
    return str(name).rstrip("/").split("/")[-1] or str(name)


def _fmt_value(v: Any) -> str | None:
    if v is None or isinstance(v, dict):
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        parts = [p for p in (_fmt_value(x) for x in v) if p is not None]
        return "+".join(parts)
    return str(v)


def _fmt_args(args: dict[str, Any]) -> str:
    parts = []
    for k in sorted(args):
        v = _fmt_value(args[k])
        if v is not None:
            parts.append(f"{k}={v}")
    return f"({','.join(parts)})" if parts else ""


def _strategy(run: Run) -> tuple[str, str | None, dict[str, Any], dict[str, Any]]:
    """(model, strategy or None, strategy arguments from config, parsed model_args)."""
    cfg = run.data["config"]
    model = str(cfg.get("model") or run.data.get("model_source") or "model")
    margs = parse_model_args(cfg.get("model_args"))
    strategy = cfg.get("ilora_strategy") or (margs.get("strategy") if model == "ilora" else None)
    args = cfg.get("ilora_args") if isinstance(cfg.get("ilora_args"), dict) else {}
    if strategy and not args:
        # no ilora_args in config: fall back to the model_args other than the model's own
        args = {k: v for k, v in margs.items() if k not in ("pretrained", "strategy", "library")}
    return model, (str(strategy) if strategy else None), args, margs


def default_label(run: Run, varying: set[str] | frozenset[str] = frozenset()) -> str:
    """`model:strategy(key args)@base` for our runs, `hf@base` / `hf(peft=adapter)@base` for stock ones.

    Key arguments: the strategy arguments given explicitly in model_args, plus `varying` (those
    whose values differ between the compared runs of the same model and strategy).
    """
    model, strategy, args, margs = _strategy(run)
    base = margs.get("pretrained") or margs.get("model") or margs.get("path") or run.data.get("model_name")
    if strategy:
        key = {k: v for k, v in args.items() if k in margs or k in varying}
        head = f"{model}:{strategy}{_fmt_args(key)}"
    else:
        extra = {"peft": _short_name(margs["peft"])} if margs.get("peft") else {}
        head = f"{model}{_fmt_args(extra)}"
    return f"{head}@{_short_name(base)}" if base else head


def _varying_args(runs: list[Run]) -> dict[int, set[str]]:
    """Per run (by index): strategy arguments whose values differ among runs of its model+strategy."""
    families: dict[tuple[str, str], list[int]] = {}
    parsed = [_strategy(r) for r in runs]
    for i, (model, strategy, _, _) in enumerate(parsed):
        if strategy:
            families.setdefault((model, strategy), []).append(i)
    out: dict[int, set[str]] = {}

    def shown(args: dict[str, Any], k: str) -> str:
        return json.dumps(args[k], sort_keys=True, default=str) if k in args else "<absent>"

    for members in families.values():
        keys = {k for i in members for k in parsed[i][2]}
        differ = {k for k in keys if len({shown(parsed[i][2], k) for i in members}) > 1}
        for i in members:
            out[i] = differ
    return out


def assign_labels(runs: list[Run], overrides: list[str] | None) -> None:
    overrides = list(overrides or [])
    if len(overrides) > len(runs):
        raise IloraError(
            f"{len(overrides)} --label values for {len(runs)} runs; give at most one --label per run, in input order"
        )
    seen_override = set()
    for name in overrides:
        if name in seen_override:
            raise IloraError(f"--label {name!r} given twice; labels must be unique")
        seen_override.add(name)
    varying = _varying_args(runs)
    wanted = [overrides[i] if i < len(overrides) else default_label(r, varying.get(i, set())) for i, r in enumerate(runs)]
    taken: set[str] = set(overrides)
    counts: dict[str, int] = {}
    for i, (run, name) in enumerate(zip(runs, wanted)):
        if i < len(overrides):
            run.label = name
            continue
        label = name
        if label in taken:
            k = counts.get(name, 1)
            while f"{name}#{k + 1}" in taken:
                k += 1
            counts[name] = k + 1
            label = f"{name}#{k + 1}"
        taken.add(label)
        run.label = label


# --------------------------------------------------------------------------- the comparison


@dataclass
class TaskChoice:
    task: str
    metric: str
    filter: str


@dataclass
class GroupRow:
    group: str  # "all" or an lm-eval group name
    kind: str  # "mean_unweighted" | "mean_weighted"
    tasks: list[str]
    values: dict[str, float | None]  # label -> mean
    n_total: int | None


@dataclass
class PairRow:
    task: str
    metric: str
    filter: str
    score_a: float
    score_b: float
    diff: float
    result: str  # win | tie | loss (for run A)
    n_docs: int | None
    test: str
    p_value: float | None
    significant: bool
    note: str = ""


@dataclass
class Pair:
    a: str
    b: str
    rows: list[PairRow]
    excluded: list[str]  # tasks not scored in both runs
    wins: int = 0
    ties: int = 0
    losses: int = 0
    sig_wins: int = 0
    sig_losses: int = 0
    no_p: int = 0
    summary: str = ""


@dataclass
class Comparison:
    runs: list[Run]
    choices: list[TaskChoice]
    groups: list[GroupRow]
    pairs: list[Pair]
    notes: list[str]
    alpha: float
    out_dir: Path | None = None

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs]


def _choose(task: str, runs: list[Run], metric_opt: str | None, filter_opt: str | None, notes: list[str]) -> TaskChoice | None:
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
    wanted = filter_opt or DEFAULT_FILTER
    with_metric = [r for r in have if metric in r.metrics[task]]
    if any(wanted in r.metrics[task][metric] for r in with_metric):
        filt = wanted
    else:
        filt = next(iter(with_metric[0].metrics[task][metric]))
        notes.append(f"{task}: no '{wanted}' filter for {metric}; using filter '{filt}'")
    return TaskChoice(task, metric, filt)


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


def _group_rows(group: str, tasks: list[str], runs: list[Run], choices: dict[str, TaskChoice]) -> list[GroupRow]:
    unweighted: dict[str, float | None] = {}
    weighted: dict[str, float | None] = {}
    n_totals = []
    for run in runs:
        scores = [run.score(t, choices[t].metric, choices[t].filter) for t in tasks]
        if not tasks or any(s is None for s in scores):
            unweighted[run.label] = weighted[run.label] = None
            continue
        unweighted[run.label] = sum(scores) / len(scores)
        ns = [run.n_eff.get(t) for t in tasks]
        if any(n is None for n in ns) or sum(ns) == 0:
            weighted[run.label] = None
        else:
            weighted[run.label] = sum(s * n for s, n in zip(scores, ns)) / sum(ns)
            n_totals.append(sum(ns))
    n_total = n_totals[0] if n_totals and len(set(n_totals)) == 1 else None
    return [
        GroupRow(group, "mean_unweighted", tasks, unweighted, n_total),
        GroupRow(group, "mean_weighted", tasks, weighted, n_total),
    ]


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


def _compare_pair(a: Run, b: Run, choices: list[TaskChoice], alpha: float, permutations: int, notes: list[str]) -> Pair:
    pair = Pair(a.label, b.label, rows=[], excluded=[])
    for ch in choices:
        sa, sb = a.score(ch.task, ch.metric, ch.filter), b.score(ch.task, ch.metric, ch.filter)
        if sa is None or sb is None:
            pair.excluded.append(ch.task)
            continue
        diff = sa - sb
        higher = a.higher.get(ch.task, {}).get(ch.metric, b.higher.get(ch.task, {}).get(ch.metric, True))
        if abs(diff) <= TIE_TOL:
            result = "tie"
        elif (diff > 0) == higher:
            result = "win"
        else:
            result = "loss"
        test, p, n_docs, note = "n/a", None, None, ""
        per_doc = []
        for run in (a, b):
            try:
                per_doc.append(run.per_doc(ch.task, ch.metric, ch.filter))
            except _NoSamples as err:
                note = f"{run.label}: {err}"
                break
        if len(per_doc) == 2:
            da, db = per_doc
            common = [d for d in da if d in db]
            if not common:
                note = "no doc_id in common"
            else:
                n_docs = len(common)
                test, p = compare_stats.paired_test(
                    [da[d] for d in common], [db[d] for d in common], n_resamples=permutations
                )
                if len(common) != len(da) or len(common) != len(db):
                    note = f"{len(common)} docs matched ({len(da)} vs {len(db)} logged)"
                for run, vals, score in ((a, da, sa), (b, db, sb)):
                    mean = sum(vals.values()) / len(vals)
                    if abs(mean - score) > MEAN_CHECK_TOL:
                        msg = (
                            f"{run.label} / {ch.task}: per-document mean {mean:.6g} differs from the reported "
                            f"{ch.metric} {score:.6g} (metric not a mean of per-doc values, or samples from another run)"
                        )
                        if msg not in notes:
                            notes.append(msg)
        significant = p is not None and p < alpha and result != "tie"
        pair.rows.append(PairRow(ch.task, ch.metric, ch.filter, sa, sb, diff, result, n_docs, test, p, significant, note))
        if result == "win":
            pair.wins += 1
            pair.sig_wins += significant
        elif result == "loss":
            pair.losses += 1
            pair.sig_losses += significant
        else:
            pair.ties += 1
        if p is None:
            pair.no_p += 1
    summary = (
        f"{pair.a} vs {pair.b}: {_plural(pair.wins, 'win')}, {_plural(pair.ties, 'tie')}, "
        f"{_plural(pair.losses, 'loss')} ({_plural(pair.sig_wins, 'win')} and "
        f"{_plural(pair.sig_losses, 'loss')} significant at {alpha:g})"
    )
    extras = []
    if pair.no_p:
        extras.append(f"p-value n/a for {_plural(pair.no_p, 'task')} (no per-document samples)")
    if pair.excluded:
        extras.append(f"{_plural(len(pair.excluded), 'task')} not in both runs excluded: {', '.join(pair.excluded)}")
    pair.summary = summary + ("; " + "; ".join(extras) if extras else "")
    return pair


def _resolve_baseline(name: str, labels: list[str]) -> str:
    if name in labels:
        return name
    hits = [label for label in labels if name in label]
    if len(hits) == 1:
        return hits[0]
    what = "matches several runs" if hits else "matches no run"
    raise IloraError(f"--baseline {name!r} {what}; use one of: {', '.join(labels)}")


def compare(
    paths: list[str],
    out_dir: str | Path | None = DEFAULT_OUT,
    labels: list[str] | None = None,
    metric: str | None = None,
    filter: str | None = None,  # noqa: A002 - mirrors --filter
    baseline: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    permutations: int = DEFAULT_PERMUTATIONS,
    chart: bool = True,
) -> Comparison:
    """Compare lm-eval results; writes the outputs into `out_dir` unless it is None."""
    if not paths:
        raise IloraError("no results given; pass lm-eval results JSON files or directories")
    if not 0 < alpha < 1:
        raise IloraError(f"--alpha {alpha} is outside (0, 1); pass e.g. --alpha 0.05")
    if permutations < 1:
        raise IloraError(f"--permutations {permutations} must be at least 1")
    runs = [load_run(p) for p in find_results_files(paths)]
    assign_labels(runs, labels)
    notes: list[str] = []
    for run in runs:
        if not run.metrics:
            notes.append(f"{run.label} ({run.path}): no task scores in this results file")
    tasks = sorted({t for r in runs for t in r.metrics})
    if not tasks:
        raise IloraError("none of the results files holds any task scores; pass results from finished lm_eval runs")
    choices = [c for c in (_choose(t, runs, metric, filter, notes) for t in tasks) if c is not None]
    if not choices:
        raise IloraError(f"no task reports the metric '{metric}'; drop --metric or pick one the results contain")
    by_task = {c.task: c for c in choices}

    for ch in choices:
        missing = [r.label for r in runs if r.score(ch.task, ch.metric, ch.filter) is None]
        if missing:
            notes.append(
                f"{ch.task}: no {ch.metric} ({ch.filter}) in {', '.join(missing)}; blank cell, "
                "excluded from the means and from pairwise counts with those runs"
            )
    common = [c.task for c in choices if all(r.score(c.task, c.metric, c.filter) is not None for r in runs)]
    group_rows = _group_rows("all", common, runs, by_task)
    subtasks: dict[str, list[str]] = {}
    for run in runs:
        for g, ch in run.group_subtasks.items():
            subtasks.setdefault(g, list(ch))
    for g in sorted(subtasks):
        members = [t for t in _leaves(g, subtasks) if t in by_task]
        members = sorted(set(members))
        if not members or set(members) == set(by_task):
            continue
        group_rows += _group_rows(g, [t for t in members if t in common], runs, by_task)
    if any(
        row.kind == "mean_weighted" and row.tasks and row.values.get(run.label) is None
        for row in group_rows
        for run in runs
    ):
        notes.append("weighted mean n/a where a run lacks n-samples counts for a task")

    if len(runs) < 2:
        pairs_of: list[tuple[Run, Run]] = []
        notes.append("only one run: nothing to compare pairwise")
    elif baseline is not None:
        base_label = _resolve_baseline(baseline, [r.label for r in runs])
        base = next(r for r in runs if r.label == base_label)
        pairs_of = [(r, base) for r in runs if r is not base]
    else:
        pairs_of = [(runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    pairs = [_compare_pair(a, b, choices, alpha, permutations, notes) for a, b in pairs_of]

    result = Comparison(runs, choices, group_rows, pairs, notes, alpha)
    if out_dir is not None:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise IloraError(f"cannot create output directory {out} ({err.strerror}); pass another --out") from None
        result.out_dir = out
        (out / "table.md").write_text(table_markdown(result), encoding="utf-8")
        _write_table_csv(result, out / "table.csv")
        (out / "wins.md").write_text(wins_markdown(result), encoding="utf-8")
        _write_wins_csv(result, out / "wins.csv")
        if chart:
            write_chart(result, out / "chart.png")
    return result


# --------------------------------------------------------------------------- writers


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _num(v: float | None, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.{digits}f}"


def _n_cell(runs: list[Run], task: str) -> str:
    ns = []
    for r in runs:
        n = r.n_eff.get(task)
        if n is not None and task in r.metrics and n not in ns:
            ns.append(n)
    return "/".join(str(n) for n in ns)


def _group_name(row: GroupRow) -> str:
    kind = "unweighted" if row.kind == "mean_unweighted" else "weighted by n"
    prefix = "" if row.group == "all" else f"{row.group}: "
    return f"{prefix}mean, {kind} ({_plural(len(row.tasks), 'task')})"


def table_markdown(c: Comparison) -> str:
    labels = c.labels
    lines = [
        "| task | metric | n | " + " | ".join(_md(lb) for lb in labels) + " |",
        "|---|---|---:|" + "---:|" * len(labels),
    ]
    for ch in c.choices:
        vals = [r.score(ch.task, ch.metric, ch.filter) for r in c.runs]
        present = [v for v in vals if v is not None]
        higher = next((r.higher[ch.task].get(ch.metric) for r in c.runs if ch.task in r.higher), None)
        best = (min(present) if higher is False else max(present)) if len(present) > 1 else None
        cells = []
        for run, v in zip(c.runs, vals):
            if v is None:
                cells.append("")
                continue
            cell = _num(v)
            se = run.stderr.get(ch.task, {}).get((ch.metric, ch.filter))
            if se is not None and not math.isnan(se):
                cell += f" ± {se:.4f}"
            if best is not None and abs(v - best) <= TIE_TOL:
                cell = f"**{cell}**"
            cells.append(cell)
        metric = ch.metric if ch.filter == DEFAULT_FILTER else f"{ch.metric} ({ch.filter})"
        lines.append(f"| {_md(ch.task)} | {_md(metric)} | {_n_cell(c.runs, ch.task)} | " + " | ".join(cells) + " |")
    for row in c.groups:
        cells = [_num(row.values.get(lb)) for lb in labels]
        n = "" if row.n_total is None or row.kind == "mean_unweighted" else str(row.n_total)
        lines.append(f"| **{_md(_group_name(row))}** |  | {n} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if c.notes:
        text += "\nNotes:\n" + "".join(f"- {n}\n" for n in c.notes)
    return text


def _write_table_csv(c: Comparison, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["kind", "name", "metric", "filter", "n", "tasks", *c.labels])
        for ch in c.choices:
            vals = [r.score(ch.task, ch.metric, ch.filter) for r in c.runs]
            w.writerow(["task", ch.task, ch.metric, ch.filter, _n_cell(c.runs, ch.task), 1, *("" if v is None else repr(v) for v in vals)])
        for row in c.groups:
            vals = [row.values.get(lb) for lb in c.labels]
            n = "" if row.n_total is None else row.n_total
            w.writerow([row.kind, row.group, "", "", n, len(row.tasks), *("" if v is None else repr(v) for v in vals)])


def _p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.4g}"


def wins_markdown(c: Comparison) -> str:
    out = []
    if not c.pairs:
        out.append("No pairwise comparison (fewer than two runs).\n")
    for pair in c.pairs:
        out.append(f"## {_md(pair.a)} vs {_md(pair.b)}\n")
        out.append(f"{_md(pair.summary)}\n")
        out.append(
            f"| task | metric | {_md(pair.a)} | {_md(pair.b)} | diff | result | docs | test | p | significant | note |"
        )
        out.append("|---|---|---:|---:|---:|---|---:|---|---:|---|---|")
        for r in pair.rows:
            out.append(
                f"| {_md(r.task)} | {_md(r.metric)} | {_num(r.score_a)} | {_num(r.score_b)} | {r.diff:+.4f} | "
                f"{r.result} | {'' if r.n_docs is None else r.n_docs} | {r.test} | {_p_text(r.p_value)} | "
                f"{'yes' if r.significant else 'no'} | {_md(r.note)} |"
            )
        out.append("")
    out.append(
        f"Tests: {compare_stats.MCNEMAR} (two-sided binomial test on the discordant documents) when both runs' "
        f"per-document values are 0/1; otherwise {compare_stats.PERMUTATION} on the mean difference (sign flips). "
        f"Documents are matched by doc_id. A task is a win or a loss only when the scores differ; it is significant "
        f"when p < {c.alpha:g}.\n"
    )
    if c.notes:
        out.append("Notes:\n" + "".join(f"- {n}\n" for n in c.notes))
    return "\n".join(out)


def _write_wins_csv(c: Comparison, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["run_a", "run_b", "task", "metric", "filter", "score_a", "score_b", "diff", "result", "n_docs", "test", "p_value", "significant", "note"])
        for pair in c.pairs:
            for r in pair.rows:
                w.writerow([
                    pair.a, pair.b, r.task, r.metric, r.filter, repr(r.score_a), repr(r.score_b), repr(r.diff),
                    r.result, "" if r.n_docs is None else r.n_docs, r.test,
                    "n/a" if r.p_value is None else repr(r.p_value), "yes" if r.significant else "no", r.note,
                ])


def write_chart(c: Comparison, path: Path) -> None:
    """Grouped bar chart (tasks x runs), plus the unweighted mean over common tasks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cats = [ch.task for ch in c.choices]
    series = {r.label: [r.score(ch.task, ch.metric, ch.filter) for ch in c.choices] for r in c.runs}
    overall = next((g for g in c.groups if g.group == "all" and g.kind == "mean_unweighted"), None)
    if overall is not None and overall.tasks:
        cats.append("mean (common tasks)")
        for label in series:
            series[label].append(overall.values.get(label))
    n_runs = len(series)
    width = min(60.0, max(6.0, 2.0 + len(cats) * (0.3 * n_runs + 0.4)))
    fig = Figure(figsize=(width, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bar_w = 0.8 / max(1, n_runs)
    for i, (label, vals) in enumerate(series.items()):
        xs = [k + (i - (n_runs - 1) / 2) * bar_w for k in range(len(cats))]
        ax.bar(xs, [math.nan if v is None else v for v in vals], width=bar_w, label=label)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=45, ha="right", fontsize=8)
    metrics = {ch.metric for ch in c.choices}
    ax.set_ylabel(metrics.pop() if len(metrics) == 1 else "score")
    ax.grid(axis="y", alpha=0.3)
    # legend above the axes: long run labels never cover bars or tick labels
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=1 if n_runs <= 4 else 2, frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")


# --------------------------------------------------------------------------- CLI


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="leaderboard table, wins/ties/losses with paired tests, and a chart from lm-eval results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results JSON files, or directories searched recursively for results_*.json")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--label", action="append", default=[], metavar="NAME", help="override run labels, in input order (repeatable)")
    p.add_argument("--metric", default=None, help=f"metric to compare (default: per task the first of {', '.join(DEFAULT_METRICS)} present)")
    p.add_argument("--filter", default=None, help=f"lm-eval filter (default: '{DEFAULT_FILTER}', else the first filter present)")
    p.add_argument("--baseline", default=None, metavar="LABEL", help="compare every other run against this one (a label or a unique part of one) instead of all pairs")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"significance level (default: {DEFAULT_ALPHA})")
    p.add_argument("--permutations", type=int, default=DEFAULT_PERMUTATIONS, help=f"Monte Carlo resamples for the permutation test on non-0/1 metrics (default: {DEFAULT_PERMUTATIONS})")
    p.add_argument("--no-chart", action="store_true", help="skip chart.png")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    c = compare(
        args.results,
        out_dir=args.out,
        labels=args.label,
        metric=args.metric,
        filter=args.filter,
        baseline=args.baseline,
        alpha=args.alpha,
        permutations=args.permutations,
        chart=not args.no_chart,
    )
    print(table_markdown(c))
    for pair in c.pairs:
        print(pair.summary)
    written = ["table.md", "table.csv", "wins.md", "wins.csv"] + ([] if args.no_chart else ["chart.png"])
    print(f"\nwrote {', '.join(str(c.out_dir / f) for f in written)}")
    return 0
