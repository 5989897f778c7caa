"""Time the demo as a user meets it: `python -m ilora_eval.demo.benchmark`.

Runs `ilora-eval demo` twice in fresh processes with an empty cache of its own: cold (the first run
after installing: library index, learned compositions computed) and cached (the same cache: the fit
cache answers the weight searches). Budget (issue #17): cold <= 8 min, cached <= 5 min on 2 CPU cores.
Then checks what a fresh run must give: the shipped assets' hash equal to the committed reference
run's (`results/demo/demo.json`), the cached run's scores equal to the cold run's, and every group
mean inside the committed run's interval for that group (`results/demo/intervals.csv`).

Timings depend on what else the machine runs: the load average at the start is printed with them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = {"cold": 480, "cached": 300}


def _demo(out: Path, cache: Path, extra: list[str]) -> float:
    env = dict(os.environ, ILORA_EVAL_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-c", "import sys; from ilora_eval.cli import main; sys.exit(main())",
           "demo", "--out", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"ilora-eval demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def _group_means(out: Path) -> dict[str, tuple[float, float, float]]:
    """group -> (mean, interval low, interval high) from a report's intervals.csv."""
    rows = {}
    with open(out / "intervals.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["kind"] == "group_mean":
                lo = next(v for k, v in r.items() if k.startswith("ci_low"))
                hi = next(v for k, v in r.items() if k.startswith("ci_high"))
                rows[r["group"]] = (float(r["estimate"]), float(lo), float(hi))
    return rows


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ilora_eval.demo.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=None, help="where the two runs and their cache go (default: a temp folder)")
    parser.add_argument("--reference", default=None, help="committed reference run (default: results/demo of the checkout)")
    parser.add_argument("demo_args", nargs="*", help="extra `ilora-eval demo` arguments (after --)")
    args = parser.parse_args(argv)
    from ilora_eval.demo.build import shipped_assets
    from ilora_eval.demo.cli import REFERENCE, _checkout_root
    from ilora_eval.demo.run import _cpu_name

    work = Path(args.work or tempfile.mkdtemp(prefix="ilora-demo-bench-"))
    cache = work / "cache"
    print(f"CPU {_cpu_name()}, {os.cpu_count()} cores; load average at start {_load()}; work {work}")
    seconds = {}
    for kind in ("cold", "cached"):
        seconds[kind] = _demo(work / kind, cache, args.demo_args)
        verdict = "within" if seconds[kind] <= BUDGET_S[kind] else "OVER"
        cpu = json.loads((work / kind / "demo.json").read_text())["seconds"].get("cpu", float("nan"))
        print(f"{kind:7s} wall {seconds[kind]:6.0f} s, CPU {cpu:6.0f} s in the demo process   "
              f"(budget {BUDGET_S[kind]} s: {verdict}; load average now {_load()})")
    cold = json.loads((work / "cold" / "demo.json").read_text())
    cached = json.loads((work / "cached" / "demo.json").read_text())
    same = [r["scores"] for r in cold["runs"]] == [r["scores"] for r in cached["runs"]]
    print(f"cached run's scores equal the cold run's: {same}")
    print(f"assets hash {cold['assets']['hash']} (shipped: {cold['assets']['shipped']}; "
          f"shipped assets' hash {shipped_assets().hash})")
    ref = Path(args.reference) if args.reference else (_checkout_root() or Path(".")) / REFERENCE
    ok = same
    if (ref / "demo.json").is_file():
        ref_hash = json.loads((ref / "demo.json").read_text())["assets"]["hash"]
        print(f"committed reference run {ref}: hash {ref_hash} ({'equal' if ref_hash == cold['assets']['hash'] else 'DIFFERENT'})")
        ref_means, fresh = _group_means(ref), _group_means(work / "cold")
        for group, (mean, _, _) in fresh.items():
            if group not in ref_means:
                print(f"  {group:24s} {mean:.4f}  (not in the reference run)")
                continue
            m, lo, hi = ref_means[group]
            inside = lo - 1e-12 <= mean <= hi + 1e-12
            ok &= inside
            print(f"  {group:24s} fresh {mean:.4f}  reference {m:.4f} [{lo:.4f}, {hi:.4f}]  {'inside' if inside else 'OUTSIDE'}")
        ok &= ref_hash == cold["assets"]["hash"]
    else:
        print(f"no committed reference run at {ref}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
