"""lm-eval's stock BBH configs (`bbh/zeroshot/<task>.yaml`): the task descriptions `bbh_zeroshot`
prepends and its `flexible-extract` answer filters, applied per document by `BBHFlexibleExtract`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterable

from lm_eval.api.filter import Filter

from ilora_eval.tasks.data import BBH_TASKS


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


@lru_cache(maxsize=None)
def _stock_zeroshot_config(task: str) -> dict:
    from ilora_eval.lm_eval_compat import load_yaml

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


class BBHFlexibleExtract(Filter):
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
