"""`ilora-eval export`: the compositions of an `--model ilora` run as standard PEFT LoRA adapters.

Every composition the run learned or chose (LoraHub: one per task; iLoraComp: one per adaptation
example; single_best; uniform over the whole library) is written as an adapter folder that
`PeftModel.from_pretrained`, `lm_eval --model hf --model_args peft=DIR` or a LoRA server loads,
plus `routes.json`: which folder answers each task, adaptation example and routed document.
With `--per-document`, the training-free per-document strategies (retrieve_fuse, uniform with
top_k > 0) are exported from the run's routing log, one folder per distinct composition.

The composed adapter is LoraHub's: A = Σ w_i A_i, B = Σ w_i B_i per LoRA module (not PEFT's
add_weighted_adapter, which scales by square roots), exactly what the run's `composition=param`
layer applied.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ilora_eval.errors import IloraError
from ilora_eval.run_files import date_id_of, parse_model_args, results_files_under, routing_log_for

ROUTES_NAME = "routes.json"
ROUTES_FORMAT = "ilora-eval routes 1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Named:
    """A composition in library adapter ids."""

    adapters: tuple[str, ...]
    weights: tuple[float, ...]

    def as_json(self) -> dict:
        return {"adapters": list(self.adapters), "weights": list(self.weights)}

    @property
    def key(self) -> tuple:
        """Equal for compositions that compose to the same tensors (order, zero weights aside)."""
        return tuple(sorted((a, w) for a, w in zip(self.adapters, self.weights) if w != 0.0))


# --------------------------------------------------------------------------- reading the run


def learned_compositions(config: dict, task: str, library_ids: list[str]) -> dict:
    """The compositions the run fixed for `task`, read from its results `config`.

    The only reader of `config.ilora_tasks[task]["learned"]`, so a change of that format
    touches this function alone. Returns {"task": Named} for a task-level composition
    (lorahub, single_best, uniform with top_k=0), {"examples": [Named, ...]} for ilora, and
    {} for strategies that compose per document without learning (retrieve_fuse, uniform
    with top_k>0).
    """
    strategy = config.get("ilora_strategy")
    learned = ((config.get("ilora_tasks") or {}).get(task) or {}).get("learned") or {}
    if strategy == "uniform":
        if int((config.get("ilora_args") or {}).get("top_k") or 0):
            return {}
        n = len(library_ids)
        return {"task": Named(tuple(library_ids), tuple([1.0 / n] * n))}
    if strategy == "retrieve_fuse":
        return {}

    def named(d: dict, where: str) -> Named:
        adapters, weights = d.get("adapters"), d.get("weights")
        if not isinstance(adapters, list) or not isinstance(weights, list) or len(adapters) != len(weights):
            raise IloraError(f"results config: {where} of task {task!r} holds no adapters/weights lists; "
                             "is the results file from this version of ilora-eval?")
        missing = [a for a in adapters if a not in library_ids]
        if missing:
            raise IloraError(f"results config: task {task!r} uses adapter(s) {missing[:3]} missing from the library; "
                             "pass --library with the run's library")
        return Named(tuple(adapters), tuple(float(w) for w in weights))

    if strategy == "lorahub":
        return {"task": named(learned, "the learned composition")}
    if strategy == "single_best":
        adapter = learned.get("adapter")
        if adapter not in library_ids:
            raise IloraError(f"results config: task {task!r} has no single_best adapter in the library ({adapter!r}); "
                             "pass --library with the run's library")
        return {"task": Named((adapter,), (1.0,))}
    if strategy == "ilora":
        examples = learned.get("examples")
        if not isinstance(examples, list) or not examples:
            raise IloraError(f"results config: task {task!r} records no learned example compositions; "
                             "was the task evaluated by this run?")
        return {"examples": [named(e, f"example {k}") for k, e in enumerate(examples)]}
    raise IloraError(f"strategy={strategy} has no exportable composition; export handles lorahub, ilora, "
                     "single_best, uniform and (with --per-document) retrieve_fuse")


@dataclass
class Run:
    path: Path  # the results_<date_id>.json
    data: dict

    @property
    def config(self) -> dict:
        return self.data["config"]

    @property
    def date_id(self) -> str:
        return date_id_of(self.path)

    @property
    def pretrained(self) -> str | None:
        args = parse_model_args(self.config.get("model_args"))
        return args.get("pretrained") or self.config.get("model_name") or None


def find_results(path: str | os.PathLike) -> Path:
    """A results file, or an lm-eval output folder: the newest results_*.json in one folder."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise IloraError(f"{p} does not exist; pass a results_*.json of an ilora run or its --output_path folder")
    # lm-eval writes DIR/<model name>/results_<date_id>.json; accept DIR or DIR/<model name>
    files = results_files_under(p, recursive=False) or [
        f for d in sorted(p.iterdir()) if d.is_dir() for f in results_files_under(d, recursive=False)]
    if not files:
        raise IloraError(f"{p} holds no results_*.json (nor its subfolders); pass the results file or the run's --output_path")
    folders = sorted({f.parent for f in files})
    if len(folders) > 1:
        raise IloraError(f"{p} holds results of several models ({', '.join(f.name for f in folders)}); "
                         "pass one results_*.json or one of these folders")
    # ISO timestamps in the names sort by time
    return max(files, key=lambda f: date_id_of(f))


def load_run(path: str | os.PathLike) -> Run:
    file = find_results(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IloraError(f"cannot read {file} as JSON ({type(err).__name__}); pass an lm-eval results_*.json") from None
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict) or "ilora_strategy" not in config:
        raise IloraError(f"{file} is not the results file of an --model ilora run (no config.ilora_strategy); "
                         "pass the results of an ilora run")
    return Run(file, data)


def _existing(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def open_library(run: Run, override: str | None = None):
    """The run's library, checked against the hash the run recorded."""
    from ilora_eval.library import LoraLibrary

    cfg = run.config
    spec = override or cfg.get("ilora_library")
    if not spec:
        raise IloraError(f"{run.path.name} records no library (strategy={cfg.get('ilora_strategy')}); pass --library")
    path = Path(os.path.expanduser(str(spec)))
    # a relative library path was relative to the run's working directory, or to the results
    found = _existing([path] if override or path.is_absolute() else [path, run.path.parent / path])
    if found is None and override:
        raise IloraError(f"--library {spec} does not exist; pass the folder or manifest of the run's library")
    if found is None:
        raise IloraError(f"library {spec} recorded by the run is not here; pass --library with its current location")
    library = LoraLibrary.open(found, exclude=cfg.get("ilora_exclude"))
    expected = cfg.get("ilora_library_hash")
    if expected != library.content_hash:
        raise IloraError(f"library {found} has content hash {library.content_hash} but the run used {expected}; "
                         "pass --library with the exact library (and adapters) the run used")
    return library


def routing_log_path(run: Run, explicit: str | None = None) -> Path | None:
    """--routing-log, else config.ilora_routing_log, else ilora_routing_<date_id>.jsonl beside the results."""
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise IloraError(f"routing log {p} does not exist; pass the run's ilora_routing_*.jsonl")
        return p
    recorded = run.config.get("ilora_routing_log")
    candidates = []
    if recorded:
        candidates += [Path(recorded), run.path.parent / Path(recorded).name]
    candidates.append(routing_log_for(run.path))
    return _existing(candidates)


def read_routing_log(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["task"], row["doc_id"], row["adapters"], row["weights"]  # noqa: B018
            except (json.JSONDecodeError, KeyError, TypeError):
                raise IloraError(f"{path}:{lineno} is not a routing record "
                                 '({"task","doc_id","example","adapters","weights"}); pass the run\'s routing log') from None
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- composing and writing


def compose(library, comp: Named) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module (A = Σ w_i A_i [r, d_in], B = Σ w_i B_i [d_out, r]) in float64, with each
    adapter's scaling folded into B as the library stacks it."""
    index = {name: i for i, name in enumerate(library.ids)}
    idx = torch.tensor([index[a] for a in comp.adapters], dtype=torch.long)
    w = torch.tensor(comp.weights, dtype=torch.float64)
    out = {}
    for module, st in library.modules.items():
        A_i, B_i = st.rows(idx.tolist())  # only the composition's adapters are read from the host library
        A = torch.einsum("n,nrd->rd", w, A_i.double())
        B = torch.einsum("n,nor->or", w, B_i.double())
        out[module] = (A, B)
    return out


def adapter_config(library, pretrained: str | None) -> tuple[dict, float]:
    """The exported adapter_config.json and the scale PEFT will apply (B is divided by it).

    The library folds each adapter's alpha/r into B. When all adapters share one scaling, the
    library's lora_alpha (and use_rslora) are kept and B is stored unscaled, as a trained
    adapter would be; otherwise lora_alpha = r so PEFT's scaling is 1 and B keeps the folded
    scaling.
    """
    from ilora_eval.library import read_config, scaling

    configs = [read_config(e)[0] for e in library.entries]
    scalings = {scaling(c) for c in configs}
    template = dict(configs[0])
    r = library.spec.rank
    shared = len(scalings) == 1
    template.update({
        "r": r,
        "lora_alpha": template.get("lora_alpha", 8) if shared else r,
        "use_rslora": bool(template.get("use_rslora")) if shared else False,
        # the run applied neither per-module ranks/alphas, dropout, biases nor DoRA
        "rank_pattern": {}, "alpha_pattern": {}, "lora_dropout": 0.0, "lora_bias": False, "use_dora": False,
        "modules_to_save": None, "inference_mode": True, "revision": None,
        "base_model_name_or_path": library.spec.base_model or pretrained,
    })
    return template, (scalings.pop() if shared else 1.0)


def write_adapter(folder: Path, tensors: dict, config: dict, scale: float, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=False)
    state = {}
    for module, (A, B) in tensors.items():
        # PEFT's saved key names: no adapter name, base_model.model.<module path>
        state[f"base_model.model.{module}.lora_A.weight"] = A.to(dtype).contiguous()
        state[f"base_model.model.{module}.lora_B.weight"] = (B / scale).to(dtype).contiguous()
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _safe(name: str) -> str:
    # folder names double as adapter names (PEFT refuses "." in them, servers want plain names)
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_-") or "task"


class _Folders:
    """Composition -> folder name; identical compositions share one folder."""

    def __init__(self):
        self.by_comp: dict[Named, str] = {}
        self.by_key: dict[tuple, str] = {}
        self.used: set[str] = set()

    def get(self, comp: Named, name: str) -> str:
        hit = self.by_key.get(comp.key)
        if hit is not None:
            return hit
        base = name = _safe(name)
        k = 1
        while name in self.used:
            k += 1
            name = f"{base}-{k}"
        self.used.add(name)
        self.by_comp[comp] = self.by_key[comp.key] = name
        return name


def _same(logged: dict, comp: Named) -> bool:
    """A routing-log record (weights rounded to 6 decimals) against a learned composition."""
    pairs = {a: w for a, w in zip(comp.adapters, comp.weights) if w != 0.0}
    got = dict(zip(logged["adapters"], logged["weights"]))
    return set(pairs) == set(got) and all(abs(pairs[a] - float(got[a])) <= 1e-6 for a in pairs)


# --------------------------------------------------------------------------- the export


def export(results: str | os.PathLike, out: str | os.PathLike, *, per_document: bool = False,
           routing_log: str | None = None, library: str | None = None, dtype: str = "float32") -> dict:
    """Write the run's compositions under `out` and return routes.json's content."""
    run = load_run(results)
    cfg = run.config
    strategy = cfg.get("ilora_strategy")
    if strategy == "arrow":
        raise IloraError("strategy=arrow routes every token to its own adapters, which no single LoRA can express; "
                         "export a lorahub, ilora, single_best, uniform or retrieve_fuse run instead")
    if strategy == "base":
        raise IloraError("strategy=base composes no adapter; use the base model itself")
    if cfg.get("ilora_composition", "param") != "param":
        raise IloraError(f"the run used composition={cfg.get('ilora_composition')} (a mixture Σw·B·A, not LoraHub's "
                         "A=Σw·A, B=Σw·B); re-run with composition=param to export it")
    if dtype not in DTYPES:
        raise IloraError(f"--dtype {dtype} is unknown; choose one of {', '.join(DTYPES)}")
    tasks = sorted(cfg.get("ilora_tasks") or {})
    if not tasks:
        raise IloraError(f"{run.path.name} records no tasks (config.ilora_tasks is empty); was anything evaluated?")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise IloraError(f"{out} is not empty; pass a new or empty --out folder")

    lib = open_library(run, library)
    per_task = {t: learned_compositions(cfg, t, lib.ids) for t in tasks}
    instance_level = [t for t in tasks if "task" not in per_task[t]]
    if strategy != "ilora" and instance_level and not per_document:
        raise IloraError(f"strategy={strategy}{_args_note(cfg)} picks a composition per document without learning one; "
                         "pass --per-document to export each document's composition from the routing log")

    records: dict[str, list[dict]] = {}
    log_path = None
    if instance_level:
        log_path = routing_log_path(run, routing_log)
        if log_path is None:
            raise IloraError(f"no routing log for {run.path.name} (config.ilora_routing_log, "
                             f"ilora_routing_{run.date_id}.jsonl beside it); pass --routing-log PATH")
        for row in read_routing_log(log_path):
            records.setdefault(str(row["task"]), []).append(row)

    folders = _Folders()
    routes_tasks: dict[str, dict] = {}
    for task in tasks:
        comps = per_task[task]
        if "task" in comps:
            routes_tasks[task] = {"adapter": folders.get(comps["task"], task)}
            continue
        rows = records.get(task, [])
        if not rows:
            raise IloraError(f"routing log {log_path} has no documents of task {task!r}; pass the log of this run "
                             "with --routing-log")
        entry: dict = {}
        docs = {}
        if "examples" in comps:
            examples = comps["examples"]
            entry["examples"] = [folders.get(c, f"{task}-example_{k}") for k, c in enumerate(examples)]
            for row in rows:
                k = row.get("example")
                if not isinstance(k, int) or not 0 <= k < len(examples) or not _same(row, examples[k]):
                    raise IloraError(f"routing log {log_path}: document {row['doc_id']} of task {task!r} does not match "
                                     "the run's learned compositions; pass the routing log written by this run")
                docs[str(row["doc_id"])] = entry["examples"][k]
        else:
            for row in rows:
                comp = _logged_composition(row, cfg, lib.ids, log_path)
                docs[str(row["doc_id"])] = folders.get(comp, f"{task}-doc_{row['doc_id']}")
        entry["documents"] = dict(sorted(docs.items(), key=lambda kv: _doc_key(kv[0])))
        routes_tasks[task] = entry

    config, scale = adapter_config(lib, run.pretrained)
    out.mkdir(parents=True, exist_ok=True)
    for comp, name in folders.by_comp.items():
        write_adapter(out / name, compose(lib, comp), config, scale, DTYPES[dtype])
    routes = {
        "format": ROUTES_FORMAT,
        "results": str(run.path.resolve()),
        "routing_log": str(log_path.resolve()) if log_path else None,
        "strategy": strategy,
        "base_model": run.pretrained,
        "library": str(cfg.get("ilora_library")),
        "library_hash": lib.content_hash,
        "compositions": {name: comp.as_json() for comp, name in folders.by_comp.items()},
        "tasks": routes_tasks,
    }
    (out / ROUTES_NAME).write_text(json.dumps(routes, indent=2) + "\n")
    return routes


def _args_note(cfg: dict) -> str:
    k = (cfg.get("ilora_args") or {}).get("top_k")
    return f" (top_k={k})" if cfg.get("ilora_strategy") == "uniform" else ""


def _doc_key(doc_id: str):
    return (0, int(doc_id), "") if doc_id.lstrip("-").isdigit() else (1, 0, doc_id)


def _logged_composition(row: dict, cfg: dict, ids: list[str], log_path: Path) -> Named:
    adapters = [str(a) for a in row["adapters"]]
    missing = [a for a in adapters if a not in ids]
    if missing or not adapters:
        raise IloraError(f"routing log {log_path}: document {row['doc_id']} of task {row['task']!r} uses "
                         f"{'no adapter' if not adapters else f'adapter(s) {missing[:3]} missing from the library'}; "
                         "pass the routing log written by this run")
    if cfg.get("ilora_strategy") == "uniform":
        # uniform weighs 1/k exactly; the log keeps 6 decimals
        weights = [1.0 / len(adapters)] * len(adapters)
    else:
        weights = [float(w) for w in row["weights"]]
    return Named(tuple(adapters), tuple(weights))


# --------------------------------------------------------------------------- CLI


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="write a run's compositions as PEFT LoRA adapters plus routes.json",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", metavar="RESULTS",
                   help="results_*.json of an --model ilora run, or its output folder (the newest results file there)")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty folder for the adapters and routes.json")
    p.add_argument("--per-document", action="store_true",
                   help="export the per-document compositions of retrieve_fuse / uniform top_k>0 (identical ones share a folder)")
    p.add_argument("--routing-log", default=None, metavar="PATH",
                   help="the run's routing log (default: config.ilora_routing_log, else ilora_routing_<date_id>.jsonl beside RESULTS)")
    p.add_argument("--library", default=None, metavar="PATH",
                   help="the run's library, when it moved (its content hash must match the run's)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="dtype of the written tensors (default: float32)")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    routes = export(args.results, args.out, per_document=args.per_document, routing_log=args.routing_log,
                    library=args.library, dtype=args.dtype)
    n_docs = sum(len(t.get("documents", {})) for t in routes["tasks"].values())
    print(f"exported {len(routes['compositions'])} adapter(s) for {len(routes['tasks'])} task(s)"
          + (f" and {n_docs} routed document(s)" if n_docs else "")
          + f" of strategy={routes['strategy']} to {args.out} (routes: {Path(args.out) / ROUTES_NAME})")
    return 0
