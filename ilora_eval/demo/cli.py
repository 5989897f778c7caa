"""`ilora-eval demo`: every strategy on the shipped demo assets, 5 seeds each, into `./ilora-demo/`."""

from pathlib import Path

DEFAULT_OUT = "ilora-demo"
REFERENCE = Path("results") / "demo"  # the committed reference run, in a source checkout
# --quick: a smoke run (tests): three tasks of the three kinds, a few documents, one seed
QUICK_TASKS = ("demo_mix_six", "demo_twice_max", "demo_para_count")
QUICK_LIMIT = 6


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="offline demo: a tiny model, a LoRA skill library, every strategy over 5 seeds")
    p.add_argument("--out", default=None,
                   help=f"where report.md, its tables and pictures and the lm-eval runs go (default: ./{DEFAULT_OUT}); "
                        "must be new or empty, or an earlier demo's with --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output in --out")
    p.add_argument("--refresh-reference", action="store_true",
                   help="rewrite the committed reference run results/demo/ of this source checkout (full demo only)")
    p.add_argument("--rebuild", action="store_true",
                   help="retrain the assets on this machine (into --root) instead of the shipped ones")
    p.add_argument("--root", default=None, help="where --rebuild trains (default: ~/.cache/ilora-eval/demo)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {len(QUICK_TASKS)} tasks, {QUICK_LIMIT} documents each, seed 1 unless --seeds")
    p.add_argument("--seeds", default=None, help="seeds, every strategy runs each (default: 1,2,3,4,5)")
    p.add_argument("--strategies", default=None, help="comma-separated subset of the rows (default: all)")
    p.add_argument("--embedder", default=None, help="sentence embedder (default: all-MiniLM-L6-v2, offline)")
    p.add_argument("--limit", type=int, default=None, help="scored documents per task")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see docs/demo.md)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes, each running whole lm-eval runs (default: 2 if the machine has 2 or more "
                        "cores, 1 with --quick); the results do not depend on it")
    p.add_argument("--no-fit-cache", action="store_true",
                   help="recompute every learned composition (default: reuse the demo's fit cache)")
    p.set_defaults(func=_run)


def _checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / ".git").exists() and (root / "pyproject.toml").is_file() else None


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _run(args) -> int:
    import logging
    import os
    import time

    from ilora_eval.errors import IloraError

    start = time.perf_counter()
    for name in ("lm_eval", "lm-eval", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads < 1:
        raise IloraError(f"--threads {args.threads}: give 1 or more")
    if args.refresh_reference:
        if args.out is not None:
            raise IloraError("--refresh-reference writes results/demo/ of the checkout; drop --out")
        partial = [f for f in ("quick", "seeds", "strategies", "limit", "embedder", "rebuild")
                   if getattr(args, f) not in (None, False)]
        if partial or args.threads != 1:
            raise IloraError(f"--refresh-reference writes the committed reference run: run the full demo "
                             f"(drop --{(partial or ['threads'])[0].replace('_', '-')})")
        checkout = _checkout_root()
        if checkout is None:
            raise IloraError("--refresh-reference needs a source checkout (pip install -e .); use --out DIR instead")
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    from ilora_eval.demo import run as demo_run
    from ilora_eval.demo.build import build_assets, default_root, shipped_assets

    if args.refresh_reference:
        out = checkout / REFERENCE
    else:
        out = demo_run.prepare_out(Path(args.out or DEFAULT_OUT), overwrite=args.overwrite)
    if args.rebuild:
        print("ilora-eval demo: retraining the demo assets on this machine (--rebuild)...")
        assets = build_assets(Path(args.root) if args.root else default_root(), force=True, log=print)
    else:
        if args.root:
            raise IloraError("--root is where --rebuild trains; without --rebuild the shipped assets are used")
        assets = shipped_assets()
    source = "shipped" if assets.shipped else f"rebuilt in {assets.root}"
    print(f"ilora-eval demo: assets {source}, hash {assets.hash[:16]}: {len(assets.skills)} LoRA skills, "
          f"{len(assets.tasks)} tasks")
    limit = args.limit
    if args.quick:
        assets.tasks = [t for t in QUICK_TASKS if t in assets.tasks]
        seeds = seeds or (1,)
        limit = limit or QUICK_LIMIT
    seeds = seeds or demo_run.DEFAULT_SEEDS
    strategies = args.strategies.split(",") if args.strategies else None
    if args.refresh_reference:
        demo_run.clear_reference(out)
    demo_run.start_record(out)
    n_rows = len(strategies or demo_run.STRATEGY_ARGS)
    print(f"running {n_rows} strategies x {len(seeds)} seeds through lm-eval's evaluator "
          f"(per-seed protocol: adapt_seed = seed):")
    jobs = args.jobs or (1 if args.quick else min(2, os.cpu_count() or 1))
    result = demo_run.run_demo(assets, out, seeds=seeds, strategies=strategies, embedder=args.embedder,
                               limit=limit, threads=args.threads, jobs=jobs, fit_cache=not args.no_fit_cache)
    result.seconds["total"] = time.perf_counter() - start
    # CPU time of the demo and its workers (all threads): what it costs on an idle machine
    result.seconds["cpu"] = time.process_time() + _children_cpu()
    settings = {"quick": args.quick, "limit": limit, "embedder": args.embedder or "default",
                "threads": args.threads, "jobs": jobs, "fit_cache": not args.no_fit_cache}
    demo_run.write_record(result, out, settings)
    from ilora_eval.compare.report import summary_markdown

    c = result.comparison
    print()
    print(summary_markdown(c, digits=3))
    print()
    print(demo_run.verdict(result))
    print(f"\nwrote {out / 'report.md'} (assets hash {assets.hash}) with its tables and pictures, "
          f"runs/ (lm-eval JSONs, routing logs) and {demo_run.RECORD} in {time.perf_counter() - start:.0f} s")
    return 0
