"""The names and places of lm-eval's output files, and the one reader of them for the tools.

lm-eval writes `results_<date_id>.json` (or `<stem>_<date_id>.json` for an --output_path ending in
.json) and `samples_<task>_<date_id>.jsonl`; an `ilora` run adds `ilora_routing_<date_id>.jsonl`
beside them. The model's writer (`records`), `compare` and `export` all name and find these files
through this module, so a rule changes in one place. Standard library only: the tools import it
without torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ilora_eval.errors import IloraError

ROUTING_LOG_PREFIX = "ilora_routing_"
# lm-eval 0.4.13's date_id: datetime.now().isoformat() with ":" as "-" (microseconds dropped when 0)
_DATE_ID = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?$")


def date_id_of(results_file) -> str:
    """The timestamp lm-eval puts in a results file name: `results_<date_id>.json` under an
    --output_path folder, `<stem>_<date_id>.json` for an --output_path ending in .json."""
    stem = Path(results_file).stem
    found = _DATE_ID.search(stem)
    if found and (found.start() == 0 or stem[found.start() - 1] == "_"):
        return found.group(0)
    return stem.split("_", 1)[1] if "_" in stem else stem  # not lm-eval's name: everything after the first "_"


def routing_log_for(results_file) -> Path:
    """Where an ilora run's routing log sits: beside its results file, with the same timestamp
    (the one rule the writer, `compare` and `export` share)."""
    return Path(results_file).parent / f"{ROUTING_LOG_PREFIX}{date_id_of(results_file)}.jsonl"


def is_results_name(name: str) -> bool:
    """A name lm-eval gives a results file: `results_<date_id>.json`, or `<stem>_<date_id>.json`
    for an --output_path ending in .json (never a samples_*.jsonl or a routing log)."""
    path = Path(name)
    if path.suffix != ".json":
        return False
    return path.stem.startswith("results_") or bool(re.search(r"_" + _DATE_ID.pattern, path.stem))


def results_folder(output_path) -> Path:
    """The folder lm-eval 0.4.13 saves into for --output_path (before the per-model subfolder)."""
    path = Path(output_path)
    return path.parent if path.suffix == ".json" else path


def samples_file_for(results_file, task: str) -> Path:
    """Where lm-eval writes the run's `--log_samples` records of `task` (same timestamp)."""
    return Path(results_file).parent / f"samples_{task}_{date_id_of(results_file)}.jsonl"


def results_files_under(folder, recursive: bool = True) -> list[Path]:
    """lm-eval results files under `folder` (sorted by path), whichever --output_path form wrote them."""
    found = Path(folder).rglob("*.json") if recursive else Path(folder).glob("*.json")
    return sorted(p for p in found if p.is_file() and is_results_name(p.name))


def parse_model_args(model_args: Any) -> dict[str, Any]:
    """--model_args as lm-eval parses it (`k=v,...` with typed values), or a dict as given."""
    from lm_eval.utils import simple_parse_args_string

    if isinstance(model_args, dict):
        return dict(model_args)
    if not isinstance(model_args, str):
        return {}
    return simple_parse_args_string(model_args)


def read_results_json(path) -> Any:
    """The parsed results file; one-line errors for an unreadable or non-JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise IloraError(f"cannot read {path} ({err}); pass a readable lm-eval results JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise IloraError(
            f"{path} is not valid JSON ({err.msg}, line {err.lineno}); pass an lm-eval results_*.json file"
        ) from None
