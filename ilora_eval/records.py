"""Per-document routing records: which composition each document got, and from which example.

Each rank records the documents it routed; `sync` gathers them on rank 0. That is a collective,
so every rank calls it at the same points (the end of each lm-eval request type); only rank 0
writes files.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from ilora_eval.distributed import Collectives
from ilora_eval.errors import IloraError
from ilora_eval.run_files import (ROUTING_LOG_PREFIX, date_id_of, is_results_name,  # noqa: F401 (re-exported)
                                  results_folder, routing_log_for)
from ilora_eval.util import write_atomic


def check_output_path(output_path) -> None:
    """Refuses, before anything is computed, an --output_path lm-eval cannot save into (a path
    through an existing file): lm-eval would evaluate everything, then only warn and save nothing."""
    if not output_path:
        return
    folder = results_folder(output_path)
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise IloraError(f"--output_path {output_path}: {part} is a file, so lm-eval could save no results "
                                 "there; give a folder (new or existing) or a path ending in .json")
            return


def write_log_after_save(records: "RoutingRecords", folder, date_id: str) -> None:
    """Called once lm-eval saved a run's results (or tried to): the routing log beside them. Where
    lm-eval could not save, it warns and goes on; the routing log does the same."""
    path = routing_log_for(Path(folder) / f"results_{date_id}.json")
    try:
        records.write(path)
    except OSError as err:
        print(f"ilora-eval: warning: could not save the routing log {path} ({err})", file=sys.stderr)


class RoutingRecords:
    def __init__(self, comm: Collectives, log_path: str | None = None):
        self.comm = comm
        self.log_path = log_path  # an explicit routing_log=: rewritten at every sync
        self.local: list[dict] = []  # this rank's, one per routed document
        self.gathered: list[dict] = []  # every rank's, on rank 0, as of the last sync

    def add(self, key: tuple, routing, ids: list[str]) -> None:
        comp = routing.composition
        self.local.append({"task": key[0], "doc_id": key[1], "example": routing.example,
                           "adapters": [ids[i] for i in comp.indices], "weights": [round(w, 6) for w in comp.weights]})

    def clear(self) -> None:
        self.local.clear()

    def sync(self) -> None:
        parts = self.comm.gather_objects(list(self.local))
        self.gathered = [r for part in parts for r in part]
        if self.comm.rank == 0 and self.log_path:
            self.write(self.log_path)

    def use_local(self) -> None:
        """One process: its own records are all of them (no collective)."""
        self.gathered = list(self.local)

    def write(self, path) -> None:
        """One line per document, sorted; a document routed on several ranks counts once."""
        records = sorted({(str(r["task"]), r["doc_id"]): r for r in self.gathered}.values(),
                         key=lambda r: (str(r["task"]), r["doc_id"]))
        write_atomic(path, "".join(json.dumps(rec) + "\n" for rec in records))

    def docs_per_example(self) -> dict:
        """{task: {example index: documents routed to it}} over the gathered records."""
        out: dict = {}
        for (task, example), n in Counter((r["task"], r["example"]) for r in self.gathered).items():
            out.setdefault(task, {})[str(example)] = n
        return out
