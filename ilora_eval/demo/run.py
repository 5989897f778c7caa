"""Runs every strategy on the demo tasks through lm-eval's evaluator, every strategy over the same
seeds under the per-seed protocol, and reports them with `ilora-eval compare` (seed groups,
seed-aware intervals, wins on k of n tasks against LoraHub, adapter usage).

Per-seed protocol (the task pack's `--metadata '{"adapt_seed": S}'`): seed S redraws each task's
5 adaptation documents and so its scored documents, and is the strategy's seed (LoraHub's module
draw, the weight searches). Every strategy runs every seed, so a group's spread over seeds is
measured, not assumed.

All runs share one process (the stock CLI would spend ~25 s starting up per run), but each is a
real `simple_evaluate` of the `ilora` model class over all demo tasks, written in lm-eval's own
results layout (plus the routing log beside it) so `ilora-eval compare` reads it like any run.
Torch runs on ONE thread by default: for a model this small it is the fastest setting on a shared
CPU, and the arithmetic does not depend on how many cores a machine has.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ilora_eval.errors import IloraError

# row label -> (strategy, model args) for a 13-adapter library: LoraHub draws 6, iLoraComp
# retrieves 3 per example, retrieval-and-fusion takes the 2 nearest
STRATEGY_ARGS = {
    "base": ("base", {}),
    "uniform": ("uniform", {}),
    "single_best": ("single_best", {}),
    "lorahub": ("lorahub", {"n_modules": 6}),
    "ilora": ("ilora", {"top_k": 3}),
    "ilora(search_on=own)": ("ilora", {"top_k": 3, "search_on": "own"}),
    "retrieve_fuse": ("retrieve_fuse", {"top_k": 2}),
    "arrow": ("arrow", {"arrow_k": 2}),
}
# Deterministic given their adaptation examples (no draw, no search): their spread over seeds is
# the adaptation-example draw and the scored documents only. base ignores the examples entirely.
DETERMINISTIC_GIVEN_EXAMPLES = ("base", "uniform", "single_best", "retrieve_fuse", "arrow")
DEFAULT_SEEDS = (1, 2, 3, 4, 5)
RECORD = "demo.json"  # the run's record; also marks a folder as a demo's output


@dataclass
class DemoRun:
    strategy: str  # row label (STRATEGY_ARGS)
    seed: int
    scores: dict[str, float]
    seconds: float
    path: Path


@dataclass
class DemoResult:
    runs: list[DemoRun]
    tasks: list[str]
    seeds: list[int]
    assets: object = None  # DemoAssets
    comparison: object = None  # ilora_eval.compare.Comparison
    seconds: dict[str, float] = field(default_factory=dict)


def work_dir(assets, cache: Path | None = None) -> Path:
    """The demo's scratch space for these assets (task YAMLs, library manifest and index, fits):
    `$ILORA_EVAL_CACHE/demo-work/<hash>` or `~/.cache/ilora-eval/demo-work/<hash>`, never the
    package folder (the shipped assets stay exactly as committed)."""
    if cache is None:
        cache = Path(os.environ.get("ILORA_EVAL_CACHE") or Path.home() / ".cache" / "ilora-eval")
    return Path(cache) / "demo-work" / assets.hash[:16]


def library_manifest(assets, work: Path, embedder: str | None) -> Path:
    """A manifest listing the assets' adapters (sorted: the order a folder would give, so LoraHub's
    draw is the same); its index is written beside it (`<manifest>.index/`), one per embedder."""
    slug = "".join(c if c.isalnum() else "-" for c in (embedder or "default"))
    path = work / f"library-{slug}.json"
    entries = [{"path": str(assets.adapter_dir(s).resolve())} for s in sorted(assets.skills)]
    text = json.dumps({"adapters": entries}, indent=2) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def _process_settings(threads: int):
    """One process, many runs: torch threads as asked, and what is the same for every run computed
    once (lm-eval's environment report shells out to pip for seconds per run; the embedder)."""
    import torch

    import ilora_eval.embeddings as embeddings
    from ilora_eval import lm_eval_compat as compat

    saved = (torch.get_num_threads(), embeddings.load_embedder)
    embedders: dict = {}

    def load_embedder(name, device="cpu"):
        if (name, device) not in embedders:
            embedders[(name, device)] = saved[1](name, device=device)
        return embedders[(name, device)]

    torch.set_num_threads(threads)
    embeddings.load_embedder = load_embedder
    try:
        with compat.env_report_once():
            yield
    finally:
        torch.set_num_threads(saved[0])
        embeddings.load_embedder = saved[1]


@dataclass(frozen=True)
class _RunContext:
    """What every run of one demo shares (plain, picklable values: worker processes get a copy)."""

    assets: object  # DemoAssets
    runs_dir: Path
    tasks_dir: Path
    library: Path
    fits: str
    embedder: str | None
    limit: int | None
    redact: dict


def _one_run(ctx: _RunContext, label: str, seed: int) -> DemoRun:
    """One `simple_evaluate` of one row and seed over all demo tasks, saved in lm-eval's layout."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    strategy, args = STRATEGY_ARGS[label]
    t0 = time.perf_counter()
    # the pack's per-seed protocol: lm-eval hands the TaskManager's metadata to the task loaders
    manager = TaskManager(include_path=str(ctx.tasks_dir), include_defaults=False, metadata={"adapt_seed": seed})
    run_dir = ctx.runs_dir / run_dir_name(label, seed)
    stamp = _clear(run_dir)
    lm = IloraLM(pretrained=str(ctx.assets.base_dir), library=str(ctx.library), strategy=strategy,
                 embedder=ctx.embedder, device="cpu", batch_size=32, progress=False, fit_cache=ctx.fits,
                 check_base=False, routing_log=str(run_dir.resolve() / f"ilora_routing_{stamp}.jsonl"),
                 seed=seed, **args)
    res = simple_evaluate(model=lm, tasks=list(ctx.assets.tasks), task_manager=manager, log_samples=True,
                          limit=ctx.limit, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                          fewshot_random_seed=seed)
    path = _save(res, run_dir, stamp, redact={str(run_dir.resolve()): ".", **ctx.redact})
    scores = {t: float(res["results"][t]["exact_match,none"]) for t in ctx.assets.tasks}
    return DemoRun(label, seed, scores, time.perf_counter() - t0, path)


_WORKER: dict = {}


def _worker_init(threads: int) -> None:
    import logging

    for name in ("lm_eval", "lm-eval", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    settings = _process_settings(threads)
    settings.__enter__()  # for the worker's life
    _WORKER["settings"] = settings


def _worker_run(ctx: _RunContext, label: str, seed: int) -> DemoRun:
    return _one_run(ctx, label, seed)


# rough cost of a row relative to a training-free one: the weight searches dominate
_COST = {"ilora": 6, "ilora(search_on=own)": 5, "lorahub": 3}


def run_demo(assets, out_dir: Path, *, seeds=DEFAULT_SEEDS, strategies=None, embedder=None, limit=None,
             threads: int = 1, jobs: int = 1, cache: Path | None = None, fit_cache: bool = True, progress=print,
             report_out: bool = True, title: str | None = None) -> DemoResult:
    """Every strategy (row label) x every seed on all of `assets.tasks`, into `out_dir/runs/`, then
    the compare report into `out_dir` (unless `report_out` is false). `out_dir` must be empty or new
    (see `prepare_out`). `jobs` > 1 spreads the runs over that many worker processes (each on
    `threads` torch threads); every run is independent and seeded, so the results are the same."""
    labels = list(strategies or STRATEGY_ARGS)
    bad = [s for s in labels if s not in STRATEGY_ARGS]
    if bad:
        raise IloraError(f"--strategies: {bad[0]!r} is not a demo row; choose from {', '.join(STRATEGY_ARGS)}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise IloraError(f"--seeds {','.join(map(str, seeds))}: give distinct non-negative seeds, e.g. 1,2,3,4,5")
    if jobs < 1 or threads < 1:
        raise IloraError(f"--jobs {jobs} --threads {threads}: give 1 or more of each")
    out_dir = Path(out_dir)
    work = work_dir(assets, cache)
    ctx = _RunContext(
        assets=assets, runs_dir=out_dir / "runs", tasks_dir=assets.write_tasks(work / "tasks"),
        library=library_manifest(assets, work, embedder), fits=str(work / "fits") if fit_cache else "false",
        embedder=embedder, limit=limit,
        redact={str(assets.root.resolve()): "<demo-assets>", str(work.resolve()): "<demo-work>",
                str(Path.home()): "~"})
    todo = [(label, seed) for seed in seeds for label in labels]
    start = time.perf_counter()

    def show(run: DemoRun) -> None:
        mean = sum(run.scores.values()) / len(run.scores)
        progress(f"  seed {run.seed}  {run.strategy:<22} mean {mean:.3f} over {len(run.scores)} tasks  "
                 f"({run.seconds:.1f} s)")

    runs: list[DemoRun] = []
    if jobs == 1 or len(todo) == 1:
        with _process_settings(threads):
            for label, seed in todo:
                runs.append(_one_run(ctx, label, seed))
                show(runs[-1])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        _prepare_index(ctx, threads)  # once, before the workers would race to build it
        # the dearest runs first, so no worker is left with a long one at the end
        order = sorted(todo, key=lambda t: -_COST.get(t[0], 1))
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as pool:
            futures = [pool.submit(_worker_run, ctx, label, seed) for label, seed in order]
            for future in as_completed(futures):
                runs.append(future.result())
                show(runs[-1])
        rank = {key: i for i, key in enumerate(todo)}
        runs.sort(key=lambda r: rank[(r.strategy, r.seed)])
    result = DemoResult(runs, list(assets.tasks), seeds, assets=assets)
    result.seconds["runs"] = time.perf_counter() - start
    if report_out:
        t0 = time.perf_counter()
        report(result, out_dir, title=title)
        result.seconds["report"] = time.perf_counter() - t0
    return result


def _prepare_index(ctx: _RunContext, threads: int) -> None:
    """Builds the library index (adapter centroids) for the run's embedder if it is missing."""
    from ilora_eval.library import LoraLibrary
    from ilora_eval.library_index import INDEX_JSON, build_index

    library = LoraLibrary.open(str(ctx.library))
    if (library.index_dir / INDEX_JSON).is_file():
        return
    from ilora_eval.embeddings import load_embedder

    with _process_settings(threads):
        build_index(library, load_embedder(ctx.embedder, device="cpu"), progress=False)


def run_dir_name(label: str, seed: int) -> str:
    return f"{label.replace('(', '_').replace(')', '').replace('=', '-')}_seed{seed}"


def run_label(label: str, seed: int) -> str:
    """The run's label in the report; compare strips the seed to group a row's runs
    (`lorahub(seed=2)` -> group `lorahub`)."""
    return f"{label[:-1]},seed={seed})" if label.endswith(")") else f"{label}(seed={seed})"


def report(result: DemoResult, out_dir: Path, title: str | None = None):
    """`ilora-eval compare` of the runs against LoraHub's seed group, into `out_dir`; the verdict
    (which quotes compare's seed-aware intervals) closes the report."""
    from ilora_eval.compare import Settings, compare
    from ilora_eval.compare.report import write_report

    baseline = "lorahub" if any(r.strategy == "lorahub" for r in result.runs) else None
    n = len(result.tasks)
    title = title or f"ilora-eval demo: every strategy on {n} unseen tasks, {len(result.seeds)} seeds each"
    comparison = compare([str(r.path) for r in result.runs], out_dir=None,
                         labels=[run_label(r.strategy, r.seed) for r in result.runs], baseline=baseline,
                         settings=Settings())
    result.comparison = comparison
    write_report(comparison, Path(out_dir), title=title, epilogue=_epilogue(result))
    comparison.out_dir = Path(out_dir)
    return comparison


def _epilogue(result: DemoResult) -> str:
    a = result.assets
    lines = ["## The demo run", ""]
    if a is not None:
        source = "the assets shipped with ilora-eval" if a.shipped else _rebuilt_text(a)
        lines.append(f"- Assets: {source}, hash `{a.hash}` ({len(a.skills)} LoRA skills, {len(a.tasks)} tasks).")
    lines.append(f"- Seeds {', '.join(map(str, result.seeds))} for every strategy, per-seed protocol: each seed "
                 "redraws every task's 5 adaptation documents and its scored documents (`adapt_seed`) and is the "
                 "strategy's seed.")
    lines.append(f"- Deterministic given their adaptation examples (no draw, no search): "
                 f"{', '.join(DETERMINISTIC_GIVEN_EXAMPLES)}; lorahub and ilora also depend on the seed through "
                 "LoraHub's module draw and the weight search.")
    lines.append("")
    lines.append(verdict(result))
    return "\n".join(lines) + "\n"


def _rebuilt_text(assets) -> str:
    from ilora_eval.demo.build import shipped_assets

    try:
        shipped = shipped_assets().hash
    except IloraError:
        shipped = None
    if shipped == assets.hash:
        return "assets rebuilt on this machine (--rebuild), byte-identical to the shipped ones"
    return (f"assets rebuilt on this machine (--rebuild), NOT the shipped ones (shipped hash `{shipped}`): "
            "numbers differ from the committed reference run")


def _seed_means(result: DemoResult) -> dict[str, dict[str, float]]:
    """strategy row -> task -> mean over its seeds, from lm-eval's reported scores."""
    out: dict[str, dict[str, float]] = {}
    for strategy in dict.fromkeys(r.strategy for r in result.runs):
        mine = [r for r in result.runs if r.strategy == strategy]
        out[strategy] = {t: sum(r.scores[t] for r in mine) / len(mine) for t in result.tasks}
    return out


def _pair_text(pair) -> str:
    """`k of n tasks (w/t/l), mean difference +d [lo, hi]` from compare's pair (seed-aware interval)."""
    n = pair.wins + pair.ties + pair.losses
    text = f"wins on {pair.wins} of {n} tasks ({pair.wins}/{pair.ties}/{pair.losses} wins/ties/losses by seed means)"
    iv = pair.interval
    if iv is not None:
        excl = ("excludes 0" if pair.interval_significant else
                "includes 0" if iv.low <= 0 <= iv.high else "excludes 0 but is not called significant")
        text += (f", mean difference {iv.estimate:+.3f}, 95% interval [{iv.low:+.3f}, {iv.high:+.3f}] over seeds "
                 f"and documents ({excl})")
    tested = [r for r in pair.rows if r.p_value is not None]
    if tested:
        text += (f"; per-task tests: {pair.sig_wins} significant wins, {pair.sig_losses} significant losses "
                 f"of {len(tested)}")
    if pair.seed_note:
        text += f"; {pair.seed_note}"
    return text


def verdict(result: DemoResult) -> str:
    """What the run says, in words: against LoraHub (task level) every row's wins on k of n tasks and
    the seed-aware interval of its mean difference (compare's two-level bootstrap), then the mean
    per task kind and the best row per task."""
    from ilora_eval.demo.tasks import SPECS_BY_NAME

    by = _seed_means(result)
    c = result.comparison
    lines = ["## What this run says", ""]
    pairs = {p.a: p for p in getattr(c, "pairs", []) if getattr(p, "b", None) == "lorahub"}
    if pairs:
        lines.append(f"Against task-level LoraHub (every group over seeds {', '.join(map(str, result.seeds))}), "
                     "per strategy:")
        lines.append("")
        for label, pair in pairs.items():
            lines.append(f"- {label}: {_pair_text(pair)}")
        lines.append("")
        over_seeds = [r for p in pairs.values() for r in p.rows if "over seeds" in (r.test or "")]
        smallest = 2 / 2 ** len(result.seeds)  # exact two-sided sign-flip test over n paired seeds
        if over_seeds and smallest >= c.settings.alpha:
            lines.append(f"The per-task tests run over the {len(result.seeds)} seeds (compare's choice with 3 or more "
                         f"seeds); the smallest two-sided p such a test can give is 2/2^{len(result.seeds)} = "
                         f"{smallest:.4f}, not below {c.settings.alpha:g}, so no single task can be called "
                         "significant here: the verdict rests on wins on k of n tasks and on the seed-aware "
                         "interval of the mean difference.")
            lines.append("")
    kinds: dict[str, list[str]] = {}
    for t in result.tasks:
        kinds.setdefault(SPECS_BY_NAME[t].kind if t in SPECS_BY_NAME else "other", []).append(t)
    if len(kinds) > 1:
        head = "| strategy | " + " | ".join(f"{k} ({len(ts)})" for k, ts in kinds.items()) + " |"
        lines += ["Seed means by task kind (unweighted mean over the kind's tasks):", "", head,
                  "|---|" + "---:|" * len(kinds)]
        for label, scores in by.items():
            cells = [sum(scores[t] for t in ts) / len(ts) for ts in kinds.values()]
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
        lines.append("")
    lines.append("Best strategy per task (seed means): " + "; ".join(
        f"{t} {max(by, key=lambda s: by[s][t])} {max(by[s][t] for s in by):.3f}" for t in result.tasks) + ".")
    return "\n".join(lines)


# --- output folder ---------------------------------------------------------------------------


def prepare_out(out_dir: Path, *, overwrite: bool) -> Path:
    """An empty output folder: a new one, or an earlier demo's with --overwrite (only the files that
    demo wrote are removed). Anything else non-empty is refused, so an earlier demo's runs or
    pictures can never be mixed into this report."""
    out_dir = Path(out_dir)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir
    record = _read_record(out_dir)
    if record is None:
        raise IloraError(f"--out {out_dir} is not empty and holds no demo output ({RECORD}); "
                         "choose a new or empty folder")
    if not overwrite:
        raise IloraError(f"--out {out_dir} holds an earlier demo's report; pass --overwrite to replace it "
                         "or choose another --out")
    inside = out_dir.resolve()
    for rel in record.get("files", []):
        path = out_dir / rel
        if path.is_file() and path.resolve().is_relative_to(inside):
            path.unlink()
    for rel in record.get("folders", []):  # an interrupted demo lists only the folder of its runs
        path = out_dir / rel
        if path.is_dir() and path.resolve().is_relative_to(inside) and path.resolve() != inside:
            shutil.rmtree(path)
    for folder in sorted({p for p in out_dir.rglob("*") if p.is_dir()}, key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # empty ones only
    (out_dir / RECORD).unlink(missing_ok=True)
    left = [p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()]
    if left:
        raise IloraError(f"--out {out_dir} still holds files the earlier demo did not write ({', '.join(left[:3])}); "
                         "move them away or choose another --out")
    return out_dir


def _read_record(out_dir: Path) -> dict | None:
    try:
        data = json.loads((out_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "ilora-eval demo" else None


def start_record(out_dir: Path) -> Path:
    """Marks the folder as this demo's before any run is written, so that an interrupted demo's
    `runs/` can be replaced with --overwrite (and nothing else of the folder is touched)."""
    path = Path(out_dir) / RECORD
    path.write_text(json.dumps({"kind": "ilora-eval demo", "complete": False, "folders": ["runs"], "files": []},
                               indent=2) + "\n", encoding="utf-8")
    return path


def write_record(result: DemoResult, out_dir: Path, settings: dict) -> Path:
    """`demo.json`: the assets' hash, seeds, tasks, rows, timings, and every file the demo wrote
    (what --overwrite removes)."""
    import platform

    import torch

    out_dir = Path(out_dir)
    a = result.assets
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file() and p.name != RECORD)
    record = {
        "kind": "ilora-eval demo",
        "complete": True,
        "assets": {"hash": a.hash, "shipped": a.shipped, "skills": a.skills, "tasks": a.tasks},
        "seeds": result.seeds,
        "strategies": list(dict.fromkeys(r.strategy for r in result.runs)),
        "settings": settings,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "machine": {"cpu": _cpu_name(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": settings.get("threads")},
        "runs": [{"strategy": r.strategy, "seed": r.seed, "seconds": round(r.seconds, 1),
                  "path": r.path.relative_to(out_dir).as_posix(), "scores": r.scores} for r in result.runs],
        "files": files,
        "folders": ["runs"],
    }
    path = out_dir / RECORD
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def _clear(run_dir: Path) -> str:
    """Makes the run's folder; returns the timestamp of this run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return time.strftime("%Y-%m-%dT%H-%M-%S")


def _save(res: dict, run_dir: Path, stamp: str, redact: dict[str, str]) -> Path:
    """lm-eval's layout: results_<ts>.json and samples_<task>_<ts>.jsonl side by side, with this
    machine's paths replaced (`redact`, longest first) so a run can be shared or committed."""
    samples = res.pop("samples", {})
    path = run_dir / f"results_{stamp}.json"
    order = sorted(redact.items(), key=lambda kv: -len(kv[0]))

    def clean(text: str) -> str:
        for old, new in order:
            text = text.replace(old, new)
        return text

    path.write_text(clean(json.dumps(res, indent=2, default=str)))
    for task, rows in samples.items():
        text = "".join(json.dumps(row, default=str) + "\n" for row in rows)
        (run_dir / f"samples_{task}_{stamp}.jsonl").write_text(clean(text))
    return path


def clear_reference(folder: Path) -> None:
    """Empties the committed reference run's folder (`results/demo/`) before it is rewritten."""
    folder = Path(folder)
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
