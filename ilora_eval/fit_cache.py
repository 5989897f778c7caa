"""Disk cache of what a strategy learned per task, so an interrupted or repeated run resumes.

Keyed by everything the learned weights depend on: the library content hash (which covers the
adapters' order: a fit stores library positions), the strategy and its arguments, the embedder, the base model, the task name and its adaptation examples. Writes are
atomic; an unreadable entry is recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ilora_eval.strategies.fit import TaskFit
from ilora_eval.util import write_atomic

log = logging.getLogger("ilora_eval")


def default_cache_dir() -> Path:
    root = os.environ.get("ILORA_EVAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ilora-eval")
    return Path(root) / "fits"


class FitCache:
    def __init__(self, directory: str | os.PathLike, context: dict):
        self.dir = Path(directory)
        self.context = context  # library hash, strategy, args, embedder, base model
        self.hits = 0
        self.misses = 0

    def key(self, task) -> str:
        payload = {**self.context, "task": task.name,
                   "examples": [[e.prompt, e.text, e.target, e.stop] for e in task.examples]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def get(self, task) -> TaskFit | None:
        path = self.dir / f"{self.key(task)}.json"
        if not path.is_file():
            self.misses += 1
            return None
        try:
            entry = json.loads(path.read_text())
            if entry.get("task") != task.name:
                raise ValueError("entry does not belong to this task")
            # the entry's positions mean the adapters of ITS library order: never apply them to
            # another configuration, even if two keys ever collided
            if entry.get("context") != json.loads(json.dumps(self.context, default=str)):
                raise ValueError("entry was learned for another configuration")
            fit = TaskFit.from_json(entry["state"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ilora-eval: cache entry %s is unreadable (%s); recomputing it", path, err)
            self.misses += 1
            return None
        self.hits += 1
        return fit

    def put(self, task, fit: TaskFit) -> None:
        path = self.dir / f"{self.key(task)}.json"
        write_atomic(path, json.dumps({"task": task.name, "context": self.context, "state": fit.to_json()}, default=str))
