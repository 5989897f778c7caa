"""Data access of the task pack: the BBH task list, BBH examples from a local folder
($ILORA_BBH_DIR, BIG-Bench-Hard JSON layout) or the Hub (SaylorTwift/bbh), and JSON/JSONL files.

`datasets` is imported where used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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
TEST_SPLIT = "test"


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
