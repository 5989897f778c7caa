"""The `custom_dataset` loaders of the task pack's YAMLs: `load_bbh` (one BBH task),
`load_bbh_mixed` (BBH tasks interleaved in one task) and `load_unseen` (any JSON/JSONL file or
Hub dataset), each a DatasetDict with splits `test` and `adapt`."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

from ilora_eval.tasks.data import read_bbh_examples, read_local_examples
from ilora_eval.tasks.split import ADAPT_SEED, N_ADAPT, _to_dataset_dict, seeded_split, split_rows
from ilora_eval.tasks.stock_bbh import bbh_description

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
