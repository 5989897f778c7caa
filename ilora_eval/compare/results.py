"""Reading lm-eval runs for `ilora-eval compare`: results JSONs, their `--log_samples` files, the
seeds a run was made with, and the `ilora` model's routing logs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilora_eval.errors import IloraError
from ilora_eval.run_files import (date_id_of, parse_model_args, read_results_json, results_files_under,
                                  routing_log_for, samples_file_for)


class NoSamples(Exception):
    """Per-document values unavailable for a run/task; the message says why."""


class NoRouting(Exception):
    """A routing log that cannot be used; the message says why."""


@dataclass(frozen=True)
class DocValue:
    value: float
    doc_hash: str | None


@dataclass
class Run:
    path: Path
    data: dict
    label: str = ""
    group: str = ""
    model_args: dict[str, Any] = field(default_factory=dict)
    # the strategy seed (ilora) or lm-eval's --seed (stock models); None when not recorded
    seed: Any = None
    # task -> adapt_seed: the scored documents were drawn with this seed (task-pack metadata)
    doc_seeds: dict[str, Any] = field(default_factory=dict)
    # task -> metric -> filter -> value
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    stderr: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    n_eff: dict[str, int] = field(default_factory=dict)
    higher: dict[str, dict[str, bool]] = field(default_factory=dict)
    group_subtasks: dict[str, list[str]] = field(default_factory=dict)
    # every setting that makes runs differ, besides the seed: key -> (value, short text); set by labels
    settings: dict[str, tuple[Any, str | None]] = field(default_factory=dict)
    family: tuple = ()
    _per_doc: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    @property
    def config(self) -> dict:
        return self.data["config"]

    @property
    def is_ilora(self) -> bool:
        return bool(self.config.get("ilora_strategy")) or self.config.get("model") == "ilora"

    @property
    def strategy(self) -> str | None:
        s = self.config.get("ilora_strategy") or (self.model_args.get("strategy") if self.is_ilora else None)
        return str(s) if s else None

    @property
    def date_id(self) -> str:
        return date_id_of(self.path)

    @property
    def adapt_seed(self) -> Any:
        """The run's document-draw seed when every task agrees on one, else None."""
        values = {json.dumps(v, sort_keys=True, default=str) for v in self.doc_seeds.values()}
        return next(iter(self.doc_seeds.values())) if len(values) == 1 else None

    def score(self, task: str, metric: str, filt: str) -> float | None:
        return self.metrics.get(task, {}).get(metric, {}).get(filt)

    def samples_path(self, task: str) -> Path:
        """Where lm-eval 0.4.13 writes this run's samples for `task` (same timestamp)."""
        return samples_file_for(self.path, task)

    def per_doc(self, task: str, metric: str, filt: str) -> dict[Any, DocValue]:
        """doc_id -> per-document value; raises NoSamples with the reason."""
        key = (task, metric, filt)
        if key not in self._per_doc:
            try:
                self._per_doc[key] = _read_samples(self.samples_path(task), self.path.name, metric, filt)
            except NoSamples as err:
                self._per_doc[key] = err
        value = self._per_doc[key]
        if isinstance(value, NoSamples):
            raise value
        return value


def _read_samples(path: Path, results_name: str, metric: str, filt: str) -> dict[Any, DocValue]:
    if not path.is_file():
        raise NoSamples(f"no {path.name} beside {results_name} (rerun lm_eval with --log_samples)")
    values: dict[Any, DocValue] = {}
    other_filters: set[str] = set()
    try:
        for lineno, rec in _jsonl(path, NoSamples):
            if not isinstance(rec, dict) or "doc_id" not in rec:
                raise NoSamples(f"{path.name} line {lineno} has no doc_id")
            rec_filter = rec.get("filter", filt)
            if rec_filter != filt:
                other_filters.add(str(rec_filter))
                continue
            if metric not in rec:
                raise NoSamples(f"{path.name} line {lineno} has no '{metric}' value")
            value = rec[metric]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise NoSamples(f"per-document '{metric}' values in {path.name} are not numbers")
            doc_hash = rec.get("doc_hash") if isinstance(rec.get("doc_hash"), str) else None
            values.setdefault(_doc_key(rec["doc_id"]), DocValue(float(value), doc_hash))
    except OSError as err:
        raise NoSamples(f"cannot read {path.name}: {err.strerror}") from None
    if not values:
        extra = f" (filters present: {', '.join(sorted(other_filters))})" if other_filters else ""
        raise NoSamples(f"{path.name} has no records for filter '{filt}'{extra}")
    return values


def _jsonl(path: Path, error: type[Exception]):
    """(line number, record) of each non-blank line; `error` names a line that is not JSON."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError:
                    raise error(f"{path.name} line {lineno} is not valid JSON") from None


def _doc_key(doc_id: Any) -> Any:
    try:
        hash(doc_id)
    except TypeError:
        return json.dumps(doc_id, sort_keys=True)
    return doc_id


def find_results_files(paths: list[str]) -> list[Path]:
    """Each argument: a results JSON, or a directory searched recursively for results_*.json."""
    found: list[Path] = []
    seen: set[Path] = set()
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files = results_files_under(p)
            if not files:
                raise IloraError(
                    f"{p}: no results_*.json found under this directory; "
                    "pass the --output_path of an lm_eval run or a results JSON file"
                )
        elif p.is_file():
            files = [p]
        else:
            raise IloraError(f"{p}: no such file or directory; "
                             "pass an lm-eval results JSON or a directory holding them")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found


def load_run(path: Path) -> Run:
    data = read_results_json(path)
    results = data.get("results") if isinstance(data, dict) else None
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not isinstance(config, dict) or not all(
        isinstance(v, dict) for v in results.values()
    ):
        raise IloraError(
            f"{path} is not an lm-eval results file (needs top-level 'results' and 'config' objects); "
            "pass the results_*.json written by lm_eval --output_path"
        )
    run = Run(path=path, data=data, model_args=parse_model_args(config.get("model_args")))
    subtasks = data.get("group_subtasks") or {}
    if isinstance(subtasks, dict):
        run.group_subtasks = {g: list(ch) for g, ch in subtasks.items() if isinstance(ch, list) and ch}
    group_names = set(run.group_subtasks) | set(data.get("groups") or {})
    n_samples = data.get("n-samples") or {}
    hib = data.get("higher_is_better") or {}
    for task, entry in results.items():
        if task in group_names:
            continue
        metrics: dict[str, dict[str, float]] = {}
        errs: dict[tuple[str, str], float] = {}
        for key, value in entry.items():
            if "," not in key:
                continue
            metric, filt = key.split(",", 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if metric.endswith("_stderr"):
                errs[(metric[: -len("_stderr")], filt)] = float(value)
            else:
                metrics.setdefault(metric, {})[filt] = float(value)
        if not metrics:
            continue
        run.metrics[task] = metrics
        run.stderr[task] = errs
        ns = n_samples.get(task)
        if isinstance(ns, dict):
            ns = ns.get("effective", ns.get("original"))
        if isinstance(ns, (int, float)) and not isinstance(ns, bool):
            run.n_eff[task] = int(ns)
        if isinstance(hib.get(task), dict):
            run.higher[task] = {m: bool(v) for m, v in hib[task].items() if isinstance(v, bool)}
    run.seed = _seed(run)
    run.doc_seeds = _doc_seeds(run)
    return run


def _seed(run: Run) -> Any:
    """The seed that makes runs of one configuration differ.

    ilora runs: the strategy seed (`ilora_args.seed`, else `seed=` in model_args, else a
    `ilora_seed_source` record). lm-eval's own `random_seed` is not it for ilora (the strategy
    seeds its own draws), but it is the only seed a stock model (hf, ...) has.
    """
    cfg = run.config
    if run.is_ilora:
        args = cfg.get("ilora_args") if isinstance(cfg.get("ilora_args"), dict) else {}
        source = cfg.get("ilora_seed_source")
        recorded = source.get("seed") if isinstance(source, dict) else source if isinstance(source, int) else None
        for candidate in (args.get("seed"), run.model_args.get("seed"), recorded):
            if candidate is not None:
                return candidate
        return None
    return cfg.get("random_seed")


def _doc_seeds(run: Run) -> dict[str, Any]:
    """task -> the seed its scored documents were drawn with (`--metadata '{"adapt_seed": N}'`)."""
    configs = run.data.get("configs") if isinstance(run.data.get("configs"), dict) else {}
    source = run.config.get("ilora_seed_source")
    run_level = source.get("adapt_seed") if isinstance(source, dict) else None
    out = {}
    for task in run.metrics:
        meta = (configs.get(task) or {}).get("metadata") if isinstance(configs.get(task), dict) else None
        value = meta.get("adapt_seed") if isinstance(meta, dict) else None
        if value is None:
            value = run_level
        if value is not None:
            out[task] = value
    return out


def find_routing_log(run: Run) -> Path | None:
    """The routing log written by the `ilora` run, or None when it has none.

    Looked for, in order: the path recorded in the results config (`ilora_routing_log`); the file
    beside the results with the same timestamp (`ilora_routing_<date_id>.jsonl`); the older layout
    (`ilora_routing_*.jsonl` at the top of lm_eval's --output_path, one folder up) only when that
    folder holds one routing log and one ilora run, so the pairing cannot be wrong. Raises
    NoRouting when a recorded or old-layout log exists but cannot be attributed.
    """
    if not run.is_ilora:
        return None
    recorded = run.config.get("ilora_routing_log")
    if isinstance(recorded, str) and recorded:
        p = Path(recorded)
        for candidate in ([p] if p.is_absolute() else [run.path.parent / p, p]) + [run.path.parent / p.name]:
            if candidate.is_file():
                return candidate
    beside = routing_log_for(run.path)
    if beside.is_file():
        return beside
    top = run.path.parent.parent
    logs = sorted(top.glob("ilora_routing_*.jsonl"))
    if not logs:
        return None
    ilora_runs = [p for d in top.iterdir() if d.is_dir() for p in results_files_under(d, recursive=False)
                  if _is_ilora_results(p)]
    if len(logs) == 1 and len(ilora_runs) == 1:
        return logs[0]
    raise NoRouting(f"{len(logs)} routing logs in {top} for {len(ilora_runs)} ilora runs: cannot tell which is "
                    f"{run.label}'s (rerun to get ilora_routing_{run.date_id}.jsonl beside its results)")


def _is_ilora_results(path: Path) -> bool:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8")).get("config") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    return isinstance(cfg, dict) and (bool(cfg.get("ilora_strategy")) or cfg.get("model") == "ilora")


def read_routing_log(path: Path) -> list[dict]:
    """Records `{"task", "doc_id", "adapters": [ids], "weights": [floats]}`; raises NoRouting."""
    records = []
    try:
        for lineno, rec in _jsonl(path, NoRouting):
            adapters = rec.get("adapters") if isinstance(rec, dict) else None
            weights = rec.get("weights") if isinstance(rec, dict) else None
            if (not isinstance(adapters, list) or not isinstance(weights, list) or len(adapters) != len(weights)
                    or "task" not in rec or not all(isinstance(w, (int, float)) for w in weights)):
                raise NoRouting(f"{path.name} line {lineno} needs task, adapters and as many numeric weights")
            records.append({"task": str(rec["task"]), "doc_id": rec.get("doc_id"),
                            "adapters": [str(a) for a in adapters], "weights": [float(w) for w in weights]})
    except OSError as err:
        raise NoRouting(f"cannot read {path.name}: {err.strerror}") from None
    return records
