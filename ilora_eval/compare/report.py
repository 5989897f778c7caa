"""Writers for `ilora-eval compare`: report.md (embedding the pictures), the Markdown tables and
the CSV files behind every table and picture."""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any

from ilora_eval.errors import IloraError

from . import stats
from .model import ACCURACY, ACCURACY_METRICS, CORRECTION_NAMES, NO_ADAPTER, Cell, Comparison, MeanRow, plural
from .seeds import determinism_text

# Every file name a report writes (adapter_usage_<group>.png included): an --overwrite removes
# them first, so an earlier report's pictures never mix into this one.
REPORT_FILES = ("report.md", "table.md", "table.csv", "runs.csv", "wins.md", "wins.csv", "intervals.csv",
                "intervals.png", "winloss.csv", "winloss.png", "adapter_usage.csv")


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _num(v: float | None, digits: int = 4, sign: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _cell_text(cell: Cell, digits: int = 4) -> str:
    if cell.mean is None:
        return ""
    return _num(cell.mean, digits) + (f" ± {cell.sd:.{digits}f}" if cell.sd is not None else "")


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.4g}"


def _csv_num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _n_cell(c: Comparison, task: str) -> str:
    ns = []
    for r in c.runs:
        n = r.n_eff.get(task)
        if n is not None and task in r.metrics and n not in ns:
            ns.append(n)
    return "/".join(str(n) for n in ns)


def _mean_name(row: MeanRow) -> str:
    kind = "unweighted" if row.kind == "mean_unweighted" else "weighted by n"
    prefix = "" if row.group == "all" else f"{row.group}: "
    metric = "" if row.metric == ACCURACY else f" {row.metric}"
    return f"{prefix}mean{metric}, {kind} ({plural(len(row.tasks), 'task')})"


def table_markdown(c: Comparison, digits: int = 4) -> str:
    """Task x group: seed mean ± sample sd over seeds (no ± for a single run); best per task in bold."""
    labels = c.labels
    lines = [
        "| task | metric | n | " + " | ".join(_md(lb) for lb in labels) + " |",
        "|---|---|---:|" + "---:|" * len(labels),
        "| seeds |  |  | " + " | ".join(_md(g.seeds_text()) for g in c.groups) + " |",
    ]
    for ch in c.choices:
        cells = [c.cells[(ch.task, lb)] for lb in labels]
        present = [x.mean for x in cells if x.mean is not None]
        higher = next((r.higher[ch.task].get(ch.metric) for r in c.runs if ch.task in r.higher), None)
        best = (min(present) if higher is False else max(present)) if len(present) > 1 else None
        texts = []
        for cell in cells:
            text = _cell_text(cell, digits)
            if best is not None and cell.mean is not None and abs(cell.mean - best) <= 1e-12:
                text = f"**{text}**"
            texts.append(text)
        metric = ch.metric if ch.filter == "none" else f"{ch.metric} ({ch.filter})"
        lines.append(f"| {_md(ch.task)} | {_md(metric)} | {_n_cell(c, ch.task)} | " + " | ".join(texts) + " |")
    for row in c.means:
        n = "" if row.n_total is None or row.kind == "mean_unweighted" else str(row.n_total)
        lines.append(f"| **{_md(_mean_name(row))}** |  | {n} | "
                     + " | ".join(_cell_text(row.cells[lb], digits) for lb in labels) + " |")
    return "\n".join(lines) + "\n\n" + c.choice_line + "\n" + _notes(c)


def _notes(c: Comparison) -> str:
    return ("\nNotes:\n" + "".join(f"- {n}\n" for n in c.notes)) if c.notes else ""


def summary_markdown(c: Comparison, digits: int = 4) -> str:
    """One row per group: seed mean ± sd over seeds, its interval, and the comparison with the baseline."""
    overall = c.overall
    n_tasks = len(overall.tasks) if overall else 0
    conf = f"{c.settings.confidence:.0%} CI"
    metric = "" if c.main_kind == ACCURACY else f" {c.main_kind}"
    head = ["group", "seeds", "seed variance", f"mean{metric} ± sd ({plural(n_tasks, 'task')})", conf]
    pairs = {p.a: p for p in c.pairs if p.b == c.baseline} if c.baseline else {}
    if c.baseline:
        head += [f"Δ vs baseline [{conf}]", "wins on k of n tasks", "significant wins/losses"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|" + ("---:|---:|---:|" if c.baseline else "")]
    for gi in c.intervals:
        g = c.group(gi.group)
        iv = gi.interval
        row = [_md(g.label) + (" (baseline)" if g.label == c.baseline else ""), _md(g.seeds_text()),
               c.seed_status.get(g.label, ""), _cell_text(Cell(gi.mean, gi.sd, gi.seed_means), digits),
               f"[{_num(iv.low, digits)}, {_num(iv.high, digits)}]" if iv else "n/a"]
        if c.baseline:
            row += _baseline_cells(pairs.get(g.label), digits)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _baseline_cells(p, digits: int) -> list[str]:
    if p is None:
        return ["", "", ""]
    piv = p.interval
    diff = "n/a"
    if piv is not None:
        diff = f"{_num(piv.estimate, digits, True)} [{_num(piv.low, digits, True)}, {_num(piv.high, digits, True)}]"
        diff += " *" if p.interval_significant else ""
    compared = p.wins + p.ties + p.losses
    sig = "never (1 seed)" if p.seed_note else f"{p.sig_wins}/{p.sig_losses}"
    return [diff, f"{p.wins} of {compared} ({p.wins}/{p.ties}/{p.losses})", sig]


def wins_markdown(c: Comparison) -> str:
    out = []
    if not c.pairs:
        out.append("No comparison (fewer than two groups).\n")
    corr = CORRECTION_NAMES[c.settings.correction]
    for pair in c.pairs:
        out.append(f"## {_md(pair.a)} vs {_md(pair.b)}\n")
        out.append(f"{_md(pair.summary)}\n")
        out.append(f"| task | metric | {_md(pair.a)} | {_md(pair.b)} | diff | result | design | docs | test | p | "
                   f"p Holm | p BH | significant ({corr}) | note |")
        out.append("|---|---|---:|---:|---:|---|---|---:|---|---:|---:|---:|---|---|")
        for r in pair.rows:
            out.append(
                f"| {_md(r.task)} | {_md(r.metric)} | {_num(r.mean_a)} | {_num(r.mean_b)} | {_num(r.diff, 4, True)} | "
                f"{r.result} | {r.design} | {'' if r.n_docs is None else r.n_docs} | {r.test} | {_p(r.p_value)} | "
                f"{_p(r.p_holm)} | {_p(r.p_bh)} | {'yes' if r.significant else 'no'} | {_md(r.note)} |"
            )
        out.append("")
    out.append("Method. " + method_text(c))
    if c.notes:
        out.append(_notes(c))
    return "\n".join(out)


def method_text(c: Comparison) -> str:
    s = c.settings
    return (
        f"A group is the runs that differ only by seed (`--group-by {s.group_by}`): the prompt settings lm-eval "
        "records (n-shot, chat template, system instruction, few-shot as multiturn), --gen_kwargs, --limit and every "
        "model and strategy argument are equal within a group. Its score on a task is the mean over its runs, ± the "
        "sample standard deviation (n - 1) over them. Means over tasks only average tasks of one metric kind "
        f"(accuracy: {', '.join(ACCURACY_METRICS)}; any other metric is a kind of its own). A task is a win, tie or "
        "loss by the two groups' seed means on the documents both scored (matched by doc_id in the `--log_samples` "
        "files, and by (seed, doc_id) when the documents were drawn per seed, `adapt_seed`; groups with different "
        "seeds are then compared unpaired); a task whose groups share no document is not compared. Per-task tests: "
        "when each group has at least 3 seeds (or is deterministic), over seeds (each run's score: sign flips of the "
        "seed differences when the seeds are paired, else the two-sample permutation test); otherwise over "
        f"documents (a group's value per document is its mean over seeds): {stats.MCNEMAR} for paired 0/1 values, "
        f"else the {stats.PERMUTATION} test on the mean difference (sign flips; exact up to {s.permutations} "
        f"patterns), or the {stats.PERMUTATION_UNPAIRED} test when unpaired; scipy.stats. p-values are adjusted "
        f"over every per-task test of this report ({plural(c.n_tests, 'test')}) by Holm (family-wise error) and "
        f"Benjamini-Hochberg (false discovery rate); significant means {CORRECTION_NAMES[s.correction]}-adjusted "
        f"p < {s.alpha:g}. Intervals: {s.confidence:.0%} percentile two-level bootstrap of the unweighted mean over "
        f"the {c.main_kind} tasks every group has, {s.bootstrap} resamples (seed {s.seed}): each resample draws a "
        "group's seeds (runs) with replacement, the same draw for every task and for both groups when they ran the "
        "same seeds, then each task's documents with replacement (one draw shared by every run and group that "
        "scored those documents; per seed when the documents were drawn per seed); the seed part is scaled by "
        "sqrt(S / (S - 1)) so its variance is unbiased. The intervals therefore cover both which documents and "
        "which seed (adaptation draw and search); with one seed they cover documents only. " + determinism_text()
        + "\n"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "group"


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _table_csv(c: Comparison, path: Path) -> None:
    header = ["kind", "name", "metric", "filter", "n", "tasks"]
    for lb in c.labels:
        header += [lb, f"{lb} sd"]

    def cells(get):
        out = []
        for lb in c.labels:
            cell = get(lb)
            out += [_csv_num(cell.mean), _csv_num(cell.sd)]
        return out

    rows = [["seeds", "", "", "", "", ""] + [x for g in c.groups for x in (g.seeds_text(), "")]]
    for ch in c.choices:
        rows.append(["task", ch.task, ch.metric, ch.filter, _n_cell(c, ch.task), 1,
                     *cells(lambda lb, t=ch.task: c.cells[(t, lb)])])
    for row in c.means:
        rows.append([row.kind, row.group, "", "", "" if row.n_total is None else row.n_total, len(row.tasks),
                     *cells(lambda lb, r=row: r.cells[lb])])
    _write_csv(path, header, rows)


def _relative(path: Path, folder: Path) -> str:
    """A run's path as seen from the report's folder (reports move with their runs; no machine paths)."""
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def _runs_csv(c: Comparison, path: Path) -> None:
    rows = []
    for g in c.groups:
        for r in g.runs:
            for ch in c.choices:
                v = r.score(ch.task, ch.metric, ch.filter)
                se = r.stderr.get(ch.task, {}).get((ch.metric, ch.filter))
                rows.append([g.label, r.label, r.seed, r.adapt_seed, _relative(r.path, path.parent), ch.task, ch.metric, ch.filter,
                             _csv_num(v), _csv_num(se)])
    header = ["group", "run", "seed", "adapt_seed", "path", "task", "metric", "filter", "score", "stderr"]
    _write_csv(path, header, rows)


def _wins_csv(c: Comparison, path: Path) -> None:
    rows = []
    for pair in c.pairs:
        for r in pair.rows:
            rows.append([pair.a, pair.b, r.task, r.metric, r.filter, _csv_num(r.mean_a), _csv_num(r.mean_b),
                         _csv_num(r.diff),
                         r.result, r.design, "" if r.n_docs is None else r.n_docs, r.test,
                         "n/a" if r.p_value is None else repr(r.p_value), _csv_num(r.p_holm), _csv_num(r.p_bh),
                         "yes" if r.significant else "no", r.note])
    _write_csv(path, ["group_a", "group_b", "task", "metric", "filter", "mean_a", "mean_b", "diff", "result", "design",
                      "n_docs", "test", "p_value", "p_holm", "p_bh", "significant", "note"], rows)


def _intervals_csv(c: Comparison, path: Path) -> None:
    s = c.settings
    rows = []
    for gi in c.intervals:
        iv = gi.interval
        rows.append(["group_mean", gi.group, "", _csv_num(gi.mean), _csv_num(iv.low if iv else None),
                     _csv_num(iv.high if iv else None), _csv_num(gi.sd), c.group(gi.group).seeds_text(),
                     ";".join(repr(v) for v in gi.seed_means), "", gi.note, ""])
    for p in c.pairs:
        iv = p.interval
        rows.append(["difference", p.a, p.b, _csv_num(iv.estimate if iv else None), _csv_num(iv.low if iv else None),
                     _csv_num(iv.high if iv else None), "", "", "", p.interval_design,
                     "; ".join(x for x in (p.seed_note, p.interval_note) if x),
                     "yes" if p.interval_significant else "no"])
    header = ["kind", "group", "baseline", "estimate", f"ci_low_{s.confidence:g}", f"ci_high_{s.confidence:g}",
              "sd_over_seeds", "seeds", "seed_means", "design", "note", "significant"]
    _write_csv(path, header, rows)


def _winloss_csv(c: Comparison, path: Path) -> None:
    rows = []
    for p in c.pairs:
        if p.b != c.baseline:
            continue
        for r in p.rows:
            adjusted = r.p_holm if c.settings.correction == "holm" else r.p_bh
            rows.append([p.a, p.b, r.task, _csv_num(r.diff), r.result, _csv_num(adjusted),
                         "yes" if r.significant else "no"])
    _write_csv(path, ["group", "baseline", "task", "diff", "result", f"p_{c.settings.correction}", "significant"], rows)


def _usage_csv(c: Comparison, path: Path) -> None:
    rows = [[u["group"], u["run"], u["task"], u["adapter"], repr(u["usage"]), u["docs"]] for u in c.usage]
    _write_csv(path, ["group", "run", "task", "adapter", "usage", "docs"], rows)


def check_out_dir(out: Path) -> None:
    """An existing non-empty --out folder is refused: a report is never silently overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "is not empty (an earlier report?)"
        raise IloraError(f"--out {out} {what}; pass --overwrite to replace its report, or another --out")


def _remove_old_report(out: Path) -> None:
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    for old in out.glob("adapter_usage_*.png"):
        old.unlink()


def write_report(c: Comparison, out: Path, chart: bool = True, title: str | None = None, epilogue: str = "") -> None:
    """Every output into `out` (an earlier report's files there are removed first); the names
    written are kept in c.written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_old_report(out)
    except OSError as err:
        raise IloraError(f"cannot create output directory {out} ({err.strerror}); pass another --out") from None
    c.out_dir = out
    written = []

    def put(name: str, text: str) -> None:
        (out / name).write_text(text, encoding="utf-8")
        written.append(name)

    put("table.md", table_markdown(c))
    _table_csv(c, out / "table.csv")
    _runs_csv(c, out / "runs.csv")
    written += ["table.csv", "runs.csv"]
    if c.pairs:
        put("wins.md", wins_markdown(c))
        _wins_csv(c, out / "wins.csv")
        written.append("wins.csv")
    _intervals_csv(c, out / "intervals.csv")
    written.append("intervals.csv")
    if c.baseline and c.pairs:
        _winloss_csv(c, out / "winloss.csv")
        written.append("winloss.csv")
    usage_pngs: dict[str, str] = {}
    if c.usage:
        _usage_csv(c, out / "adapter_usage.csv")
        written.append("adapter_usage.csv")
    pictures: dict[str, str] = {}
    if chart:
        from . import charts

        charts.intervals_png(c, out / "intervals.png")
        pictures["intervals"] = "intervals.png"
        if c.baseline and c.pairs:
            charts.winloss_png(c, out / "winloss.png")
            pictures["winloss"] = "winloss.png"
        taken = set()
        for g in c.groups:
            # a group that never composed an adapter (the base model) has nothing to draw
            if any(u["group"] == g.label and u["adapter"] != NO_ADAPTER for u in c.usage):
                name = f"adapter_usage_{_slug(g.label)}.png"
                k = 1
                while name in taken:
                    k += 1
                    name = f"adapter_usage_{_slug(g.label)}_{k}.png"
                taken.add(name)
                charts.usage_png(c, g.label, out / name)
                usage_pngs[g.label] = name
        written += list(pictures.values()) + list(usage_pngs.values())
    put("report.md", report_markdown(c, pictures, usage_pngs, title, epilogue))
    c.written = written


def report_markdown(c: Comparison, pictures: dict[str, str], usage_pngs: dict[str, str], title: str | None = None,
                    epilogue: str = "") -> str:
    s = c.settings
    corr = CORRECTION_NAMES[s.correction]
    parts = [f"# {title or 'Comparison of ' + plural(len(c.runs), 'run') + ' in ' + plural(len(c.groups), 'group')}\n"]
    parts.append(c.choice_line + "\n")
    grouping = ("runs that differ only by seed" if s.group_by == "label"
                else "all runs of one strategy and base model (`--group-by strategy`)")
    head = (f"Groups: {grouping}; every number is a mean over a group's runs, ± the sample sd over them. "
            f"Baseline: {c.baseline or 'none (every pair of groups)'}. Significance: {corr}-adjusted p < {s.alpha:g} "
            f"over {plural(c.n_tests, 'per-task test')}.\n")
    parts.append(head)
    if c.separation:
        parts.append("Settings that separate the groups: " + "; ".join(_md(x) for x in c.separation) + ".\n")
    parts.append("## Summary\n")
    parts.append(summary_markdown(c))
    if "intervals" in pictures:
        parts.append(f"![group means with {s.confidence:.0%} bootstrap intervals]({pictures['intervals']})\n")
    parts.append("Data: [intervals.csv](intervals.csv) (group means, per-seed means, intervals"
                 + (", differences against the baseline" if c.baseline else "") + ").\n")
    if c.pairs:
        parts.append("## Against the baseline\n" if c.baseline else "## Pairs of groups\n")
        if "winloss" in pictures:
            parts.append(f"![per-task results against the baseline]({pictures['winloss']})\n")
        parts.append("".join(f"- {p.summary}\n" for p in c.pairs))
        parts.append(("Data: [winloss.csv](winloss.csv); " if c.baseline else "Data: ")
                     + "per-task tests with adjusted p-values: [wins.md](wins.md), [wins.csv](wins.csv).\n")
    parts.append("## Scores per task\n")
    parts.append("\n".join(table_markdown(c).split("\n\n")[:1]) + "\n")
    parts.append("Data: [table.csv](table.csv) (groups), [runs.csv](runs.csv) (every run, with lm-eval's stderr).\n")
    if c.usage:
        parts.append("## Adapter usage (routing logs)\n")
        parts.append("Which library adapters each task's documents were answered with. Each routed document counts "
                     "once, spread over its adapters as |w| / Σ|w| of its composition weights (a document without "
                     "adapters counts for `(none)`); summed over documents and over a group's runs. The pictures show "
                     "each task's row as shares of its documents; [adapter_usage.csv](adapter_usage.csv) holds the "
                     "sums (they add up to the number of routed documents).\n")
        for label, name in usage_pngs.items():
            parts.append(f"![adapter usage of {label}]({name})\n")
    parts.append("## Method\n")
    parts.append(method_text(c))
    if epilogue:
        parts.append(epilogue.rstrip() + "\n")
    if c.notes:
        parts.append("## Notes\n")
        parts.append("".join(f"- {n}\n" for n in c.notes))
    return "\n".join(parts)
