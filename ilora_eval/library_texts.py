"""Texts for libraries that ship none (most Hub adapters): `ilora-eval library build LIB --texts-from DATA`
samples each adapter's texts from a local dataset and writes them to the library's index folder
(`texts/<adapter>.jsonl`, next to the centroids; the adapters' own folders are never written).
An adapter's own texts.jsonl wins over a sampled file.

DATA is either
- one dataset (a .jsonl/.json/.csv file or a `datasets` `save_to_disk` folder) whose `--task-column`
  names each row's adapter (rows whose value equals the adapter id), or
- a per-adapter spec (.json): {"adapters": {"<adapter id>": {"path": ..., "split": ..., "column": ...,
  "count": ..., "task_column": ..., "task": ...}, ...}}: each adapter's own dataset (all fields but
  "path" optional; "task_column"/"task" keep only the rows of one task of a shared dataset).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ilora_eval.errors import IloraError


@dataclass
class Source:
    path: str
    split: str | None = None
    columns: tuple[str, ...] = ("text",)
    count: int = 200
    task_column: str | None = None
    task: str | None = None


def _columns(value) -> tuple[str, ...]:
    cols = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(c.strip() for c in cols if str(c).strip())


def load_rows(path: str, split: str | None) -> list[dict]:
    """The rows of a local dataset: JSON lines, a JSON list, CSV, or a `save_to_disk` folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise IloraError(f"--texts-from dataset {p} does not exist; pass a .jsonl/.json/.csv file or a save_to_disk folder")
    if p.is_dir():
        try:
            from datasets import DatasetDict, load_from_disk

            ds = load_from_disk(str(p))
        except Exception as err:
            raise IloraError(f"{p} is not a `datasets` save_to_disk folder ({type(err).__name__}); pass a folder "
                             "written by Dataset.save_to_disk or a .jsonl/.csv file") from None
        if isinstance(ds, DatasetDict):
            name = split or ("train" if "train" in ds else None)
            if name not in ds:
                raise IloraError(f"{p} has splits {sorted(ds)}; pick one with split= (--split)")
            ds = ds[name]
        return list(ds)
    if p.suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise IloraError(f"{p} is not valid JSON ({err.msg} at line {err.lineno}); fix the file") from None
        if isinstance(data, dict) and split in data:
            data = data[split]
        if not isinstance(data, list):
            raise IloraError(f"{p} must hold a list of rows (or {{split: [rows]}} with --split)")
        return data
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise IloraError(f"{p}:{lineno} is not a JSON line; --texts-from reads .jsonl, .json, .csv or a save_to_disk folder") from None
    return rows


def row_text(row: dict, columns: tuple[str, ...], where: str) -> str:
    missing = [c for c in columns if c not in row]
    if missing:
        raise IloraError(f"{where}: rows have no column {missing[0]!r} (columns: {sorted(row)}); pick the text "
                         "column(s) with --text-column")
    return " ".join(str(row[c]) for c in columns if row[c] is not None and str(row[c]).strip())


def sample(rows: list[str], count: int, seed: int, name: str) -> list[str]:
    """`count` of `rows` (all of them if fewer), the same for the same seed and adapter, in dataset order."""
    rows = [r for r in rows if r.strip()]
    if len(rows) <= count:
        return rows
    keep = sorted(random.Random(f"{seed}:{name}").sample(range(len(rows)), count))
    return [rows[i] for i in keep]


def read_spec(path: Path) -> dict | None:
    """A per-adapter spec ({"adapters": {id: {...}}}), or None when `path` is a dataset."""
    if path.suffix != ".json" or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # load_rows reports it
    if not (isinstance(data, dict) and isinstance(data.get("adapters"), dict)):
        return None
    return data["adapters"]


def plan_sources(texts_from: str, ids: list[str], *, task_column: str | None, columns: str, split: str | None,
                 count: int) -> dict[str, Source]:
    """adapter id -> where its texts come from (adapters the spec does not name are left out)."""
    spec = read_spec(Path(texts_from).expanduser())
    if spec is None:
        if not task_column:
            raise IloraError(f"--texts-from {texts_from} is one dataset for all adapters: name the column holding "
                             "each row's adapter id with --task-column (or pass a per-adapter spec .json)")
        return {i: Source(texts_from, split, _columns(columns), count, task_column, i) for i in ids}
    unknown = sorted(set(spec) - set(ids))
    if unknown:
        raise IloraError(f"--texts-from {texts_from} names adapters {unknown[:5]} the library does not hold; fix the ids")
    out = {}
    base = Path(texts_from).expanduser().parent
    for name, s in spec.items():
        if not isinstance(s, dict) or "path" not in s:
            raise IloraError(f"--texts-from {texts_from}: adapter {name!r} needs {{\"path\": ...}} (and optionally split, "
                             "column, count, task_column, task)")
        p = Path(str(s["path"])).expanduser()
        out[name] = Source(str(p if p.is_absolute() else base / p), s.get("split", split),
                           _columns(s.get("column", columns)), int(s.get("count", count)),
                           s.get("task_column", task_column if "task" in s else None), s.get("task"))
        if out[name].task is not None and not out[name].task_column:
            raise IloraError(f"--texts-from {texts_from}: adapter {name!r} has a task but no task_column")
    return out


def sample_texts(library, texts_from: str, *, task_column: str | None = None, columns: str = "text",
                 split: str | None = None, count: int = 200, seed: int = 0) -> dict[str, int]:
    """Writes `<index>/texts/<adapter>.jsonl` for every adapter without its own texts.jsonl; returns
    adapter id -> texts written (0: no rows for it)."""
    from ilora_eval.library_store import SAMPLED_TEXTS_DIR, sampled_texts_path
    from ilora_eval.util import write_atomic

    if count < 1:
        raise IloraError(f"--count {count} must be >= 1 (texts sampled per adapter)")
    own = {e.name for e in library.entries
           if e.texts_path is not None and e.texts_path != sampled_texts_path(library.index_dir, e.name)}
    todo = [i for i in library.ids if i not in own]
    sources = plan_sources(texts_from, todo, task_column=task_column, columns=columns, split=split, count=count)
    loaded: dict[tuple, list[dict]] = {}
    written = {}
    for name in todo:
        src = sources.get(name)
        if src is None:
            continue
        key = (src.path, src.split)
        if key not in loaded:
            loaded[key] = load_rows(src.path, src.split)
        rows = loaded[key]
        where = f"--texts-from {src.path}"
        if src.task_column:
            if rows and src.task_column not in rows[0]:
                raise IloraError(f"{where}: rows have no column {src.task_column!r} (columns: {sorted(rows[0])}); "
                                 "fix --task-column")
            rows = [r for r in rows if str(r.get(src.task_column)) == str(src.task)]
        texts = sample([row_text(r, src.columns, where) for r in rows], src.count, seed, name)
        target = sampled_texts_path(library.index_dir, name)
        if texts:
            write_atomic(target, "".join(json.dumps({"text": t}) + "\n" for t in texts))
        elif target.exists():
            target.unlink()  # an earlier sample from another source must not linger
        written[name] = len(texts)
    record = {"texts_from": texts_from, "task_column": task_column, "columns": columns, "split": split,
              "count": count, "seed": seed, "written": written}
    write_atomic(Path(library.index_dir) / SAMPLED_TEXTS_DIR / "sources.json", json.dumps(record, indent=2))
    return written
