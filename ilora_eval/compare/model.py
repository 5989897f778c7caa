"""What a comparison holds: settings, defaults and the result dataclasses. The analysis
(comparison.py) fills them, the report and charts read them; neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import stats
from .labels import Group
from .results import Run

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
# Metrics that are a share of documents answered right (0/1 per document): averaged together.
# Any other metric (perplexity, bleu, f1...) is a kind of its own and never enters their mean.
ACCURACY_METRICS = ("acc", "acc_norm", "exact_match", "em", "acc_mutual_info")
ACCURACY = "accuracy"


def metric_kind(metric: str) -> str:
    return ACCURACY if metric in ACCURACY_METRICS else metric


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


@dataclass
class TaskChoice:
    task: str
    metric: str
    filter: str

    @property
    def kind(self) -> str:
        return metric_kind(self.metric)


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
    metric: str = ACCURACY  # the metric kind of every task in the mean


@dataclass
class PairRow:
    task: str
    metric: str
    filter: str
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    result: str  # win | tie | loss (for group A) | n/a (not compared: no shared documents)
    design: str  # paired | unpaired | none | n/a
    n_docs: int | None
    test: str
    p_value: float | None
    p_holm: float | None = None
    p_bh: float | None = None
    significant: bool = False
    note: str = ""
    gated: bool = False  # a one-seed learned group: never significant


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
    not_compared: list[str] = field(default_factory=list)
    interval: stats.Interval | None = None
    interval_design: str = ""
    interval_note: str = ""
    interval_tasks: int = 0
    seed_note: str = ""  # why nothing of this pair may be called significant ("" when it may)
    summary: str = ""

    @property
    def interval_significant(self) -> bool:
        iv = self.interval
        return iv is not None and not self.seed_note and (iv.low > 0 or iv.high < 0)


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
    separation: list[str] = field(default_factory=list)  # settings that tell the groups apart
    seed_status: dict[str, str] = field(default_factory=dict)  # group label -> seed variance status
    main_kind: str = ACCURACY  # the metric kind of the summary's mean and intervals

    @property
    def labels(self) -> list[str]:
        """Group labels, in order (a group of one run carries that run's label without its seed)."""
        return [g.label for g in self.groups]

    def group(self, label: str) -> Group:
        return next(g for g in self.groups if g.label == label)

    @property
    def overall(self) -> MeanRow | None:
        """The unweighted mean over the tasks of the main metric kind that every group has."""
        return next((m for m in self.means if m.group == "all" and m.kind == "mean_unweighted"
                     and m.metric == self.main_kind), None)
