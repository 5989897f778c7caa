"""Routing: from documents to composition ids, and the record of each choice.

Two jobs that belong together: the sentence embeddings (the embedder, its cache, the library's
centroids) that strategies route by, and the per-document routes (one strategy call per task and
batch of new documents, a composition id registered in the CompositionState, a routing record).
"""

from __future__ import annotations

import numpy as np

from ilora_eval.adaptation import TaskData
from ilora_eval.composition import CompositionState
from ilora_eval.distributed import Collectives
from ilora_eval.records import RoutingRecords


class Embeddings:
    """The embedder (loaded at first use), its cache of embedded texts, the library's centroids."""

    def __init__(self, name: str | None, library, collectives: Collectives):
        self.name = name
        self.library = library
        self.comm = collectives
        self.loaded = None
        self.cache: dict[str, np.ndarray] = {}

    def embedder(self):
        if self.loaded is None:
            from ilora_eval.embeddings import load_embedder

            self.loaded = load_embedder(self.name, device="cpu")
        return self.loaded

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, e in zip(missing, self.embedder().encode(missing)):
                self.cache[t] = e
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def centroids(self) -> np.ndarray:
        from ilora_eval.library_index import INDEX_JSON, load_centroids

        embedder = self.embedder()
        if self.comm.world_size > 1:  # rank 0 builds a missing index; every rank waits (one barrier each)
            if self.comm.rank == 0 and not (self.library.index_dir / INDEX_JSON).is_file():
                load_centroids(self.library, embedder)
            self.comm.barrier()
        return load_centroids(self.library, embedder)


class Routes:
    """A composition id per document (task name, doc id), chosen once and recorded."""

    def __init__(self, *, strategy, tasks: dict[str, TaskData], state: CompositionState, library,
                 records: RoutingRecords):
        self.strategy = strategy
        self.tasks = tasks  # the fitted tasks by name (shared with Fitting)
        self.state = state
        self.ids = library.ids if library is not None else []
        self.records = records
        self.chosen: dict[tuple, int] = {}

    def _task(self, name) -> TaskData:
        return self.tasks.get(name) or TaskData(str(name), None, [], "none")

    def route(self, requests) -> list[int]:
        """A composition id per request (objects with task_name, doc_id, doc, args: lm-eval's Instances)."""
        pending: dict[str, dict[tuple, str]] = {}
        for r in requests:
            key = (r.task_name, r.doc_id)
            if key not in self.chosen:
                pending.setdefault(r.task_name, {}).setdefault(key, self._task(r.task_name).doc_text(r.doc, r.args[0]))
        for task_name, items in pending.items():
            for key, routing in zip(items, self.strategy.route(self._task(task_name), list(items.values()))):
                self.chosen[key] = self.state.register(routing.composition)
                self.records.add(key, routing, self.ids)
        return [self.chosen[(r.task_name, r.doc_id)] for r in requests]

    def forget(self) -> None:
        self.chosen.clear()
        self.records.clear()
