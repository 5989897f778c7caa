"""Shared code of the ilora task pack: data loading, held-out adaptation split, metric, filters.

lm-eval loads the `!function utils.X` helpers of a YAML from the `utils.py` beside it, by file
path. `bbh_ilora/utils.py` and `unseen/utils.py` re-export what is defined here, so every task of
the pack uses the same loader, split and normaliser.

Kept free of heavy imports at module level (`datasets`, `lm_eval`): they are imported where used.
"""

from __future__ import annotations

import json
import logging
import os
import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

# The 27 BIG-Bench Hard tasks (file names of suzgunmirac/BIG-Bench-Hard, configs of SaylorTwift/bbh).
BBH_TASKS: tuple[str, ...] = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)

HUB_DATASET = "SaylorTwift/bbh"
BBH_DIR_ENV = "ILORA_BBH_DIR"
N_ADAPT = 5
ADAPT_SEED = 42
ADAPT_SPLIT = "adapt"
TEST_SPLIT = "test"

# Source tasks of `bbh_ilora_mixed`: six answer formats (True/False, Yes/No, valid/invalid,
# multiple choice letter, integer, free text).
MIXED_SOURCE_TASKS: tuple[str, ...] = (
    "boolean_expressions",
    "navigate",
    "formal_fallacies",
    "date_understanding",
    "multistep_arithmetic_two",
    "word_sorting",
)


# --------------------------------------------------------------------------------------- metric
def lorahub_normalize(text: Any) -> str:
    """LoraHub's answer normaliser: ``strip().lower()``, then every period removed (in that order)."""
    return str(text).strip().lower().replace(".", "")


def exact_match(references: Sequence[str], predictions: Sequence[str], **_ignored) -> float:
    """Exact match after `lorahub_normalize` on both sides (lm-eval metric interface).

    lm-eval calls a task metric with one reference and one prediction per document; the mean
    over the documents is taken by the `aggregation: mean` of the YAML.
    """
    refs, preds = list(references), list(predictions)
    if len(refs) != len(preds) or not refs:
        raise ValueError(f"exact_match: got {len(refs)} references and {len(preds)} predictions")
    hits = [lorahub_normalize(r) == lorahub_normalize(p) for r, p in zip(refs, preds)]
    return float(sum(hits)) / len(hits)


# ----------------------------------------------------------------------------------- data access
def bbh_dir_from_env() -> Path | None:
    value = os.environ.get(BBH_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _local_task_file(folder: Path, task: str) -> Path:
    """`<folder>/<task>.json`; also accepts the data set's root (`<folder>/tasks/<task>.json`)."""
    for candidate in (folder / f"{task}.json", folder / "tasks" / f"{task}.json"):
        if candidate.is_file():
            return candidate
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{BBH_DIR_ENV} names the folder '{folder}', which does not exist "
            f"(expected the BIG-Bench-Hard layout: <task>.json files with an 'examples' list)"
        )
    raise FileNotFoundError(
        f"No '{task}.json' in the BBH folder '{folder}' (nor in '{folder / 'tasks'}') named by "
        f"{BBH_DIR_ENV}; expected the BIG-Bench-Hard layout: <task>.json with "
        f'{{"examples": [{{"input": ..., "target": ...}}]}}'
    )


def read_local_examples(path: Path, input_field: str = "input", target_field: str = "target",
                        field: str | None = "examples") -> list[dict]:
    """Examples of a JSON file (a list, or an object holding the list under `field`) or JSONL."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file '{path}' does not exist (folder '{path.parent}')")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    else:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, dict):
            if field is None or field not in data:
                raise ValueError(f"'{path}' is a JSON object without the list field '{field}'")
            data = data[field]
        rows = list(data)
    for i, row in enumerate(rows):
        for key in (input_field, target_field):
            if key not in row:
                raise KeyError(f"'{path}': example {i} has no field '{key}' (fields: {sorted(row)})")
    return rows


def read_bbh_examples(task: str) -> list[dict]:
    """The examples of one BBH task, in the source order, as ``[{"input", "target"}]``.

    The environment variable ILORA_BBH_DIR names a local folder in the BIG-Bench-Hard JSON
    layout; without it, the Hub dataset SaylorTwift/bbh is read.
    """
    if task not in BBH_TASKS:
        raise ValueError(f"Unknown BBH task '{task}'; known: {', '.join(BBH_TASKS)}")
    folder = bbh_dir_from_env()
    if folder is not None:
        rows = read_local_examples(_local_task_file(folder, task))
    else:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, task, split=TEST_SPLIT)
        rows = list(ds)
    return [{"input": str(r["input"]), "target": str(r["target"])} for r in rows]


# ------------------------------------------------------------------------------- held-out split
def adapt_indices(n_docs: int, n_adapt: int = N_ADAPT, seed: int = ADAPT_SEED, key: str = "") -> list[int]:
    """Indices (sorted) of the documents held out as adaptation examples.

    Depends only on (n_docs, n_adapt, seed, key): `random.Random` seeded with the string
    "<seed>:<key>" (a SHA-512 based seeding, stable across processes and Python versions;
    Python's salted `hash()` is never used).
    """
    n_adapt = int(n_adapt)
    if n_adapt < 0 or n_adapt >= n_docs:
        raise ValueError(f"n_adapt={n_adapt} must be >= 0 and smaller than the {n_docs} documents of '{key}'")
    rng = random.Random(f"{int(seed)}:{key}")
    return sorted(rng.sample(range(n_docs), n_adapt))


def _to_dataset_dict(test_rows: list[dict], adapt_rows: list[dict]):
    import datasets

    def build(rows: list[dict]) -> "datasets.Dataset":
        if rows:
            return datasets.Dataset.from_list(rows)
        columns = list(test_rows[0]) if test_rows else ["input", "target"]
        return datasets.Dataset.from_dict({c: [] for c in columns})

    return datasets.DatasetDict({TEST_SPLIT: build(test_rows), ADAPT_SPLIT: build(adapt_rows)})


def seeded_split(rows: list[dict], n_adapt: int, adapt_seed: int) -> tuple[list[dict], list[dict]]:
    """The reference code's per-seed protocol: shuffle with `random.seed(adapt_seed)`, the first
    `n_adapt` documents adapt, the rest are scored (in the shuffled order). Every document records
    the seed in `adapt_seed`, so a run's results say which draw they scored."""
    n_adapt = int(n_adapt)
    if n_adapt < 0 or n_adapt >= len(rows):
        raise ValueError(f"n_adapt={n_adapt} must be >= 0 and smaller than the {len(rows)} documents")
    order = list(range(len(rows)))
    random.Random(int(adapt_seed)).shuffle(order)
    rows = [dict(rows[i], adapt_seed=int(adapt_seed)) for i in order]
    return rows[n_adapt:], rows[:n_adapt]


def split_rows(rows: list[dict], n_adapt: int, seed: int, key: str,
               adapt_seed: int | None = None) -> tuple[list[dict], list[dict]]:
    """(test, adapt): the fixed held-out draw, or with `adapt_seed` the per-seed protocol."""
    if adapt_seed is not None:
        return seeded_split(rows, n_adapt, adapt_seed)
    held = set(adapt_indices(len(rows), n_adapt, seed, key))
    adapt = [r for i, r in enumerate(rows) if i in held]
    test = [r for i, r in enumerate(rows) if i not in held]
    return test, adapt


def load_bbh(bbh_task: str, heldout_n_adapt: int = N_ADAPT, heldout_seed: int = ADAPT_SEED,
             adapt_seed: int | None = None, **_metadata):
    """`custom_dataset` of the bbh_ilora tasks: DatasetDict with splits `test` and `adapt`.

    Every document keeps `input` and `target` and gains `source_task` (the BBH task) and
    `source_index` (its position in the task's file). The held-out documents are drawn with
    `adapt_indices(N, heldout_n_adapt, heldout_seed, key=bbh_task)`, so they depend on nothing
    but the task and these two numbers: not on the prompt format or the model.

    lm-eval calls `custom_dataset(**metadata, **dataset_kwargs)`, and its metadata holds the
    CLI's `--metadata` AND `--model_args`. Everything else is therefore ignored here, and the
    parameter names are prefixed so that a model argument cannot collide with them.

    `--metadata '{"adapt_seed": S}'` switches to the reference code's per-seed protocol: the
    task's documents are shuffled with seed S, the first `heldout_n_adapt` adapt and the rest are
    scored, so each seed redraws both (see `seeded_split`).
    """
    rows = read_bbh_examples(bbh_task)
    rows = [dict(r, source_task=bbh_task, source_index=i) for i, r in enumerate(rows)]
    test, adapt = split_rows(rows, heldout_n_adapt, heldout_seed, key=bbh_task, adapt_seed=adapt_seed)
    return _to_dataset_dict(test, adapt)


def load_bbh_mixed(source_tasks: Sequence[str] = MIXED_SOURCE_TASKS, heldout_n_adapt: int = N_ADAPT,
                   heldout_seed: int = ADAPT_SEED, mixed_name: str = "bbh_ilora_mixed",
                   adapt_seed: int | None = None, **_metadata):
    """`custom_dataset` of `bbh_ilora_mixed`: the listed BBH tasks interleaved in one task.

    Documents are interleaved round-robin over `source_tasks` (in the listed order: document 0
    of each task, then document 1 of each, ...), so any prefix (`--limit`) mixes the tasks.
    One adaptation set of `heldout_n_adapt` documents is drawn across the sources: the sources
    are put in a seeded order and the i-th held-out document comes from source i (cycling when
    there are more held-out documents than sources), at an index drawn with the same seed.
    Each document carries `source_task`, `source_index` and `task_description`. With
    `adapt_seed`, the interleaved documents follow the per-seed protocol of `seeded_split`.
    """
    source_tasks = list(source_tasks)
    if len(set(source_tasks)) != len(source_tasks) or not source_tasks:
        raise ValueError(f"source_tasks must be distinct and non-empty, got {source_tasks}")
    per_task = {}
    for task in source_tasks:
        rows = read_bbh_examples(task)
        desc = bbh_description(task)
        per_task[task] = [
            dict(r, source_task=task, source_index=i, task_description=desc) for i, r in enumerate(rows)
        ]
    if adapt_seed is not None:
        longest = max(len(v) for v in per_task.values())
        rows = [per_task[t][j] for j in range(longest) for t in source_tasks if j < len(per_task[t])]
        return _to_dataset_dict(*seeded_split(rows, heldout_n_adapt, adapt_seed))

    rng = random.Random(f"{int(heldout_seed)}:{mixed_name}")
    order = list(source_tasks)
    rng.shuffle(order)
    held: dict[str, set[int]] = {t: set() for t in source_tasks}
    for i in range(int(heldout_n_adapt)):
        task = order[i % len(order)]
        free = [j for j in range(len(per_task[task])) if j not in held[task]]
        if len(free) <= 1:
            raise ValueError(f"heldout_n_adapt={heldout_n_adapt} leaves no test document of '{task}'")
        held[task].add(rng.choice(free))

    test, adapt = [], []
    longest = max(len(v) for v in per_task.values())
    for j in range(longest):
        for task in source_tasks:
            if j < len(per_task[task]):
                (adapt if j in held[task] else test).append(per_task[task][j])
    # Adaptation documents ordered by the seeded source order, then by position.
    adapt.sort(key=lambda d: (order.index(d["source_task"]), d["source_index"]))
    return _to_dataset_dict(test, adapt)


UNSEEN_KEYS = {
    "task": None, "data_files": None, "json_field": "examples", "hub_path": None, "hub_name": None,
    "hub_split": "test", "input_field": "input", "target_field": "target",
    "n_adapt": N_ADAPT, "seed": ADAPT_SEED,
}


def load_unseen(unseen: dict | None = None, adapt_seed: int | None = None, **_metadata):
    """`custom_dataset` for any unseen task: a local JSON/JSONL file or a Hub dataset.

    All settings come in ONE mapping, `dataset_kwargs: {unseen: {...}}`: lm-eval calls
    `custom_dataset(**metadata, **dataset_kwargs)` with the CLI's `--metadata` and
    `--model_args` in `metadata`, so loose keyword arguments could be changed by a model
    argument of the same name. Everything outside `unseen` is ignored. Keys (see UNSEEN_KEYS):
    `task` (required: the task's name, keys the draw, becomes `source_task`), `data_files`
    (JSON/JSONL; relative paths are read from $ILORA_DATA_DIR, else the working directory)
    with `json_field`, or `hub_path`/`hub_name`/`hub_split`; `input_field`/`target_field`
    (renamed to `input`/`target`; other columns are kept); `n_adapt`, `seed`.
    Held out: `adapt_indices(N, n_adapt, seed, key=task)`; with `--metadata '{"adapt_seed": S}'`
    the per-seed protocol of `seeded_split`.
    """
    if not isinstance(unseen, dict):
        raise ValueError("load_unseen: give the settings as `dataset_kwargs: {unseen: {task: ..., data_files: ...}}`")
    unknown = set(unseen) - set(UNSEEN_KEYS)
    if unknown:
        raise ValueError(f"load_unseen: unknown keys {sorted(unknown)}; known: {sorted(UNSEEN_KEYS)}")
    cfg = {**UNSEEN_KEYS, **unseen}
    if not cfg["task"]:
        raise ValueError("load_unseen: `task` (the unseen task's name) is required")
    if (cfg["data_files"] is None) == (cfg["hub_path"] is None):
        raise ValueError("load_unseen: give exactly one of `data_files` (JSON/JSONL) or `hub_path`")
    input_field, target_field = cfg["input_field"], cfg["target_field"]
    if cfg["data_files"] is not None:
        path = Path(cfg["data_files"]).expanduser()
        if not path.is_absolute() and os.environ.get("ILORA_DATA_DIR"):
            path = Path(os.environ["ILORA_DATA_DIR"]).expanduser() / path
        rows = read_local_examples(path, input_field, target_field, cfg["json_field"])
    else:
        import datasets

        rows = list(datasets.load_dataset(cfg["hub_path"], cfg["hub_name"], split=cfg["hub_split"]))
    key = str(cfg["task"])
    docs = []
    for i, row in enumerate(rows):
        doc = {k: v for k, v in row.items() if k not in (input_field, target_field)}
        doc.update(input=str(row[input_field]), target=str(row[target_field]), source_task=key, source_index=i)
        docs.append(doc)
    test, adapt = split_rows(docs, cfg["n_adapt"], cfg["seed"], key=key, adapt_seed=adapt_seed)
    return _to_dataset_dict(test, adapt)


# ------------------------------------------------------------------- lm-eval's stock BBH configs
def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


@lru_cache(maxsize=None)
def _stock_zeroshot_config(task: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    path = lm_eval_tasks_dir() / "bbh" / "zeroshot" / f"{task}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"lm-eval's stock BBH config '{path}' is missing")
    return load_yaml(path, resolve_func=True)


def bbh_description(task: str) -> str:
    """The task description lm-eval's `bbh_zeroshot` prepends (BBH's own, ending in a blank line)."""
    return _stock_zeroshot_config(task).get("description", "")


@lru_cache(maxsize=None)
def _stock_flexible_filters(task: str) -> tuple:
    """The filters of lm-eval's `flexible-extract` pipeline for a BBH task, without `take_first`."""
    from lm_eval.api.registry import get_filter

    for entry in _stock_zeroshot_config(task).get("filter_list") or []:
        if entry.get("name") == "flexible-extract":
            built = []
            for step in entry["filter"]:
                fn = step["function"]
                if fn == "take_first":
                    continue
                kwargs = {k: v for k, v in step.items() if k != "function"}
                built.append(get_filter(fn)(**kwargs))
            return tuple(built)
    raise ValueError(f"lm-eval's bbh_zeroshot config of '{task}' has no flexible-extract filter")


try:  # lm-eval present (always, when lm-eval runs the tasks)
    from lm_eval.api.filter import Filter as _FilterBase
except ImportError:  # pragma: no cover - lets the module import without lm-eval
    _FilterBase = object


class BBHFlexibleExtract(_FilterBase):
    """lm-eval's `flexible-extract` answer extraction of `bbh_zeroshot`, chosen per document.

    Reads the BBH task from the document field `task_field` (default `source_task`) and applies
    that task's stock extraction (regex for True/False, Yes/No, valid/invalid, numbers, `(X)`
    choices, Dyck closings, word sorting). Responses of documents whose source task is not a
    BBH task pass through unchanged. Follow with `take_first`.
    """

    def __init__(self, task_field: str = "source_task", **kwargs) -> None:
        self.task_field = task_field

    def apply(self, resps: Iterable[list[str]], docs: Iterable[dict]) -> list[list[str]]:
        out = []
        for resp, doc in zip(resps, docs):
            task = doc.get(self.task_field)
            current = [list(resp)]
            if task in BBH_TASKS:
                for flt in _stock_flexible_filters(task):
                    current = [list(x) for x in flt.apply(current, [doc])]
            out.append(current[0])
        return out
