"""`ilora-eval demo`: build (or reuse) the offline demo assets and run every strategy."""

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="offline demo: a tiny model, a LoRA skill library, every strategy")
    p.add_argument("--out", default="results/demo",
                   help="where report.md (with its tables, pictures and CSV files) and the lm-eval runs go")
    p.add_argument("--root", default=None, help="asset cache (default: ~/.cache/ilora-eval/demo)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the assets deterministically")
    p.add_argument("--quick", action="store_true", help="a 6-skill library and one seed unless --seeds (for tests)")
    p.add_argument("--seeds", default=None, help="seeds for the seeded strategies (default: 1,2,3)")
    p.add_argument("--strategies", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--embedder", default=None, help="sentence embedder (default: all-MiniLM-L6-v2, offline)")
    p.add_argument("--limit", type=int, default=None, help="documents per task")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import logging
    import time

    start = time.perf_counter()
    for name in ("lm_eval", "lm-eval", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from ilora_eval.compare.report import summary_markdown, table_markdown
    from ilora_eval.demo.build import build_assets
    from ilora_eval.demo.run import run_demo, verdict

    print("ilora-eval demo: building the demo assets (cached after the first run)...")
    assets = build_assets(Path(args.root) if args.root else None, quick=args.quick, force=args.rebuild)
    print(f"  base model {assets.base_dir}, {len(assets.skills)} LoRA skills, tasks {', '.join(assets.tasks)}")
    seeds = tuple(int(s) for s in (args.seeds or "1,2,3").split(","))
    if args.quick and args.seeds is None:
        seeds = seeds[:1]
    strategies = args.strategies.split(",") if args.strategies else None
    print("running every strategy through lm-eval's evaluator:")
    result = run_demo(assets, Path(args.out), seeds=seeds, strategies=strategies, embedder=args.embedder,
                      limit=args.limit)
    c = result.comparison
    print()
    print(summary_markdown(c, digits=3))
    print(table_markdown(c, digits=3).split("\n\n")[0])
    print()
    print(verdict(result))
    print(f"\nwrote {c.out_dir / 'report.md'} with {', '.join(n for n in c.written if n != 'report.md')} "
          f"and runs/ (lm-eval JSONs, routing logs) in {time.perf_counter() - start:.0f} s")
    return 0
