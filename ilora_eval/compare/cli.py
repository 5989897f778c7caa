"""`ilora-eval compare RESULTS... [--group-by strategy|label] [--baseline RUN|GROUP]`.

Reads lm-eval results JSONs (from `ilora` runs and stock `hf` runs alike) and writes, into `--out`
(default `results/compare`), report.md with its pictures and the CSV behind each:

* groups: runs that differ only by seed (`seed=` / `ilora_args.seed` of an ilora run, lm-eval's
  `--seed` of a stock one, the task pack's `adapt_seed`) form one group; n-shot, chat template,
  system instruction, --gen_kwargs, --limit and every model argument must be equal. Reported as
  mean ± sd over seeds per task and for every mean over tasks of one metric kind (table.md,
  table.csv; each run: runs.csv); the report names the settings that separate the groups;
* against `--baseline` (a group or run label, a unique part of one, or a results path given as
  input; default: every pair of groups): "wins on k of n tasks" by seed means on the documents
  both groups scored, per-task tests (over seeds with >= 3 seeds per group, else over documents
  matched by doc_id in the `--log_samples` files) with Holm and Benjamini-Hochberg adjusted
  p-values (wins.md, wins.csv, winloss.png/csv), and two-level bootstrap intervals (seeds, then
  documents) of group means and differences (intervals.png/csv). A learned strategy run with one
  seed is marked "1 seed: seed variance not measured" and never called significant;
* from the ilora runs' routing logs, the adapters each task's documents used (adapter_usage*).

Run labels name their configuration (see ilora_eval/compare/labels.py); `--label` overrides them
in input order.
"""

from __future__ import annotations

import argparse

from .comparison import compare
from .model import (
    CORRECTION_NAMES,
    DEFAULT_ALPHA,
    DEFAULT_CONFIDENCE,
    DEFAULT_FILTERS,
    DEFAULT_METRICS,
    DEFAULT_OUT,
    DEFAULT_RESAMPLES,
    Settings,
)
from .labels import GROUP_BY
from .report import summary_markdown, table_markdown


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="leaderboard report: seed groups, wins/ties/losses, corrected tests, intervals and pictures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="results JSON files, or directories searched recursively for results_*.json")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output directory (default: {DEFAULT_OUT}); an existing non-empty one needs --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report in an existing --out folder (its earlier report files are removed)")
    p.add_argument("--label", action="append", default=[], metavar="NAME",
                   help="override run labels, in input order (repeatable); runs whose labels are equal without "
                        "`seed=N` form a group")
    p.add_argument("--group-by", choices=GROUP_BY, default="label",
                   help="label: runs that differ only by seed (default); strategy: all runs of a strategy")
    p.add_argument("--baseline", default=None, metavar="RUN|GROUP",
                   help="compare every other group against this one (a label or a unique part of one, or the path "
                        "of a results file or folder given as input; a run stands for its group) instead of all pairs")
    p.add_argument("--metric", default=None,
                   help=f"metric to compare (default: per task the first of {', '.join(DEFAULT_METRICS)} present)")
    p.add_argument("--filter", default=None,
                   help=f"lm-eval filter (default: per metric the first of {', '.join(DEFAULT_FILTERS)} present, "
                        "else the first reported)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"significance level (default: {DEFAULT_ALPHA})")
    p.add_argument("--correction", choices=list(CORRECTION_NAMES), default="holm",
                   help="p-value adjustment deciding significance: holm (family-wise) or bh (false discovery "
                        "rate); both are reported (default: holm)")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help=f"bootstrap interval level (default: {DEFAULT_CONFIDENCE})")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                   help=f"bootstrap resamples (default: {DEFAULT_RESAMPLES})")
    p.add_argument("--permutations", type=int, default=DEFAULT_RESAMPLES,
                   help=f"resamples of the permutation tests on non-0/1 values (default: {DEFAULT_RESAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation draws (default: 0)")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG pictures (their CSV files are written)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    settings = Settings(alpha=args.alpha, correction=args.correction, confidence=args.confidence,
                        permutations=args.permutations, bootstrap=args.bootstrap, seed=args.seed,
                        group_by=args.group_by)
    c = compare(args.results, out_dir=args.out, labels=args.label, metric=args.metric, filter=args.filter,
                baseline=args.baseline, settings=settings, chart=not args.no_chart, overwrite=args.overwrite)
    print(summary_markdown(c))
    print(table_markdown(c))
    for pair in c.pairs:
        print(pair.summary)
    print(f"\nwrote {c.out_dir / 'report.md'} and {', '.join(n for n in c.written if n != 'report.md')}")
    return 0
