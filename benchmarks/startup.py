"""What the start-up hook (`ilora_eval_hook.pth`) costs every Python process.

Run from the repository root: `python -m benchmarks.startup` (see benchmarks/README.md).

The pairing: one throw-away venv (no pip, no other .pth files) with the hook's two modules copied
in and byte-compiled, as a wheel install leaves them. `python -c pass` runs alternately with the
.pth present and with it renamed away, so the two arms differ by the hook alone. An environment
with more .pth files (setuptools' editable finder, for instance) may already have loaded modules
the hook would otherwise pay for; the clean venv is the worst case. The installed hook of the
interpreter running this script is reported too.

Standard library only: importing torch here (benchmarks.common) would tell nothing about start-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PTH = "ilora_eval_hook.pth"
HOOK_MODULE = "ilora_eval._lm_eval_hook"


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="pairs of `python -c pass` runs (default 100)")
    ap.add_argument("--importtime-runs", type=int, default=15,
                    help="`python -X importtime -c pass` runs per figure (default 15)")
    ap.add_argument("--hook", type=Path, default=REPO / "ilora_eval" / "_lm_eval_hook.py",
                    help="hook module to measure (default: this checkout's), e.g. an older version")
    ap.add_argument("--workdir", help="keep the venv in this folder instead of a temporary one")
    return ap.parse_args(argv)


def clean_env() -> dict[str, str]:
    # PYTHONPATH, PYTHONSTARTUP, ... would add the same work to both arms and blur the difference.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def make_venv(root: Path, hook: Path) -> tuple[Path, Path]:
    """(python, site-packages) of a bare venv holding the hook's modules, compiled, and no .pth yet."""
    venv = root / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, env=clean_env()).stdout.strip())
    pkg = site / "ilora_eval"
    shutil.rmtree(pkg, ignore_errors=True)
    pkg.mkdir(parents=True)
    shutil.copy(REPO / "ilora_eval" / "__init__.py", pkg / "__init__.py")
    shutil.copy(hook, pkg / "_lm_eval_hook.py")
    subprocess.run([str(python), "-m", "compileall", "-q", str(pkg)], check=True, env=clean_env())
    return python, site


def importtime_tree(python: str, env: dict[str, str]) -> tuple[int | None, list[str]]:
    """(cumulative µs of the hook's import line, modules first imported under it) from one run."""
    err = subprocess.run([python, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, env=env,
                         check=True).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = line.split("|", 2)
        if not cum.strip().isdigit():  # the header line
            continue
        rows.append((int(cum), len(name) - len(name.lstrip()), name.strip()))
    for i, (cum, depth, name) in enumerate(rows):
        if name != HOOK_MODULE:
            continue
        # importtime prints a module after its imports, one level deeper: the run of deeper rows
        # just above the hook's row is what importing the hook loaded.
        j = i
        while j > 0 and rows[j - 1][1] > depth:
            j -= 1
        # A name can repeat: importtime also lists imports that failed (nt, _winapi on Linux).
        return cum, list(dict.fromkeys(r[2] for r in rows[j:i + 1]))
    return None, []


def importtime_median(python: str, env: dict[str, str], runs: int) -> tuple[float | None, list[str]]:
    cums, modules = [], []
    for _ in range(runs):
        cum, modules = importtime_tree(python, env)
        if cum is None:
            return None, []
        cums.append(cum)
    return statistics.median(cums) / 1000, modules


def run_once(python: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, cpu s) of one `python -c pass`; cpu is the child's user + system from wait4."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(python, [python, "-c", "pass"], env)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmarks.startup: error: `{python} -c pass` failed; run it by hand to see why")
    return wall, usage.ru_utime + usage.ru_stime


def paired(python: Path, site: Path, runs: int) -> dict[str, list[float]]:
    """Alternating runs with and without the .pth; the order flips every pair so neither arm always
    runs second (warmer caches)."""
    env = clean_env()
    out = {"with_wall": [], "with_cpu": [], "without_wall": [], "without_cpu": []}
    for i in range(runs + 2):  # two warm-up pairs, not recorded
        for arm in (("with", "without") if i % 2 == 0 else ("without", "with")):
            set_hook(site, arm == "with")
            wall, cpu = run_once(str(python), env)
            if i >= 2:
                out[f"{arm}_wall"].append(wall)
                out[f"{arm}_cpu"].append(cpu)
    set_hook(site, False)
    return out


def set_hook(site: Path, enabled: bool) -> None:
    on, off = site / PTH, site / (PTH + ".off")
    src, dst = (off, on) if enabled else (on, off)
    if src.exists():
        src.replace(dst)


def main(argv=None) -> str:
    args = parse(argv)
    if not args.hook.is_file():
        raise SystemExit(f"benchmarks.startup: error: hook {args.hook} does not exist; pass --hook FILE")
    t0 = time.perf_counter()
    ctx = tempfile.TemporaryDirectory(prefix="ilora_startup_") if not args.workdir else None
    root = Path(args.workdir or ctx.name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        python, site = make_venv(root, args.hook)
        (site / PTH).unlink(missing_ok=True)
        (site / (PTH + ".off")).write_bytes((REPO / PTH).read_bytes())
        times = paired(python, site, args.runs)
        set_hook(site, True)
        venv_ms, venv_modules = importtime_median(str(python), clean_env(), args.importtime_runs)
        set_hook(site, False)
    finally:
        if ctx is not None:
            ctx.cleanup()
    here_ms, here_modules = importtime_median(sys.executable, dict(os.environ), args.importtime_runs)

    ratio = {c: statistics.median(w / wo for w, wo in zip(times[f"with_{c}"], times[f"without_{c}"]))
             for c in ("wall", "cpu")}
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    lines = [
        f"hook: {args.hook}",
        f"interpreter: {sys.executable} (Python {sys.version.split()[0]})",
        "",
        "| arm | `python -c pass` ms (wall, median) | ms (cpu, median) |",
        "|---|---|---|",
        f"| clean venv, without the .pth (baseline) | {med['without_wall']:.2f} | {med['without_cpu']:.2f} |",
        f"| clean venv, with the .pth | {med['with_wall']:.2f} | {med['with_cpu']:.2f} |",
        "",
        "| where | hook's cumulative import time, ms (`-X importtime`, median) | modules its import loaded or tried |",
        "|---|---|---|",
        f"| clean venv (worst case) | {venv_ms:.3f} | {', '.join(venv_modules)} |",
        (f"| this interpreter's site-packages | {here_ms:.3f} | {', '.join(here_modules)} |" if here_ms is not None
         else "| this interpreter's site-packages | — (hook not installed) | — |"),
        "",
        f"(wall {time.perf_counter() - t0:.1f}s, {args.runs} pairs, {args.importtime_runs} importtime runs)",
        f"ratios: python -c pass with hook / without {ratio['wall']:.3f}x (wall) {ratio['cpu']:.3f}x (cpu) | "
        f"hook import {venv_ms:.2f} ms clean venv"
        + (f", {here_ms:.2f} ms this env" if here_ms is not None else "")
        + f" | hook loads {len(venv_modules)} modules: {' '.join(venv_modules)}",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
