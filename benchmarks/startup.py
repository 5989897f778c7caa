"""What installing ilora-eval costs every Python process of the environment at start-up.

Run from the repository root: `python -m benchmarks.startup` (docs/compatibility.md).

The install measured is the README's: `pip install -e .`, an editable wheel built by this
checkout's setup.py (`--install wheel`: a regular wheel). The benchmark copies the checkout (the
files a clone has), builds that wheel with the build backend, as pip does, and unpacks it into a
throw-away venv without pip or any other .pth file, byte-compiled as pip leaves it. `python -c pass`
then runs alternately with the project's .pth files present and renamed away, so the two arms
differ by the install alone: every .pth line the project adds (the editable finder, the start-up
hook) and every module they import. The figure is the median of the pair-by-pair differences.
`python -X importtime -c pass` lists the modules those lines import.

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
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_MS = 2.0  # issue #18: the documented install may cost `python -c pass` at most this much


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--install", choices=("editable", "wheel"), default="editable",
                    help="editable: `pip install -e .` (the README's, default); wheel: `pip install .`")
    ap.add_argument("--runs", type=int, default=100, help="pairs of `python -c pass` runs (default 100)")
    ap.add_argument("--importtime-runs", type=int, default=15,
                    help="`python -X importtime -c pass` runs for the import figure (default 15)")
    ap.add_argument("--setup-py", type=Path,
                    help="build with this setup.py instead of the checkout's (e.g. `git show REV:setup.py > F`), "
                         "to compare an older install layout")
    ap.add_argument("--workdir", help="keep the checkout copy and the venv in this folder instead of a temporary one")
    return ap.parse_args(argv)


def clean_env() -> dict[str, str]:
    # PYTHONPATH, PYTHONDONTWRITEBYTECODE, ... would change both arms or stop pip's byte-compiling.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def copy_checkout(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files git does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build(src: Path, out: Path, install: str) -> Path:
    """The wheel pip would install, from the build backend (setup.py's commands included)."""
    hook = "build_editable" if install == "editable" else "build_wheel"
    code = f"import setuptools.build_meta as b; print(b.{hook}({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.startup: error: building the {install} wheel failed:\n{proc.stderr[-2000:]}")
    return out / proc.stdout.strip().splitlines()[-1]


def make_venv(root: Path, wheel: Path) -> tuple[Path, Path, list[str]]:
    """(python, site-packages, the .pth files the wheel installed) of a bare venv holding the wheel."""
    venv = root / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, env=clean_env()).stdout.strip())
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
        pths = sorted(n for n in zf.namelist() if "/" not in n and n.endswith(".pth"))
    subprocess.run([str(python), "-m", "compileall", "-q", str(site)], check=True, env=clean_env())
    return python, site, pths


def set_pths(site: Path, pths: list[str], enabled: bool) -> None:
    for name in pths:
        on, off = site / name, site / (name + ".off")
        src, dst = (off, on) if enabled else (on, off)
        if src.exists():
            src.replace(dst)


def run_once(python: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, cpu s) of one `python -c pass`; cpu is the child's user + system from wait4."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(python, [python, "-c", "pass"], env)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmarks.startup: error: `{python} -c pass` failed; run it by hand to see why")
    return wall, usage.ru_utime + usage.ru_stime


def paired(python: Path, site: Path, pths: list[str], runs: int) -> dict[str, list[float]]:
    """Alternating runs with and without the project's .pth files; the order flips every pair so
    neither arm always runs second (warmer caches)."""
    env = clean_env()
    out = {"with_wall": [], "with_cpu": [], "without_wall": [], "without_cpu": []}
    for i in range(runs + 2):  # two warm-up pairs, not recorded (the first run writes .pyc files)
        for arm in (("with", "without") if i % 2 == 0 else ("without", "with")):
            set_pths(site, pths, arm == "with")
            wall, cpu = run_once(str(python), env)
            if i >= 2:
                out[f"{arm}_wall"].append(wall)
                out[f"{arm}_cpu"].append(cpu)
    set_pths(site, pths, True)
    return out


def project_imports(python: Path, runs: int) -> tuple[float, list[str]]:
    """(median ms, modules) of what `site` imported for the project's .pth lines: the top-level rows
    under `site` that are not the standard library's own start-up modules, with their children."""
    own: list[str] = []
    totals = []
    for _ in range(runs):
        err = subprocess.run([str(python), "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                             env=clean_env(), check=True).stderr
        rows = []
        for line in err.splitlines():
            if line.startswith("import time:") and "|" in line:
                _, cum, name = line.split("|", 2)
                if cum.strip().isdigit():
                    rows.append((int(cum), len(name) - len(name.lstrip()), name.strip()))
        total, names, block = 0, [], []
        for cum, depth, name in rows:
            block.append(name)
            if depth == 3:  # a direct child of `site` (depth 1 is `site` itself in this format)
                if any(n.startswith(("ilora_eval", "__editable__")) for n in block):
                    total += cum
                    names += block
                block = []
            elif depth < 3:
                block = []
        totals.append(total)
        own = list(dict.fromkeys(names))
    return statistics.median(totals) / 1000, own


def main(argv=None) -> str:
    args = parse(argv)
    t0 = time.perf_counter()
    ctx = tempfile.TemporaryDirectory(prefix="ilora_startup_") if not args.workdir else None
    root = Path(args.workdir or ctx.name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        src = root / "src"
        shutil.rmtree(src, ignore_errors=True)
        copy_checkout(src)
        if args.setup_py:
            shutil.copy(args.setup_py, src / "setup.py")
        wheel = build(src, root / "dist", args.install)
        python, site, pths = make_venv(root, wheel)
        times = paired(python, site, pths, args.runs)
        import_ms, modules = project_imports(python, args.importtime_runs)
    finally:
        if ctx is not None:
            ctx.cleanup()
    diff = {c: statistics.median(w - wo for w, wo in zip(times[f"with_{c}"], times[f"without_{c}"])) * 1000
            for c in ("wall", "cpu")}
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    # The verdict reads CPU time: on a busy machine the wall difference also holds the time the
    # scheduler gave other processes, and grows with the load while the CPU difference does not.
    verdict = "within" if diff["cpu"] <= BUDGET_MS else "OVER"
    lines = [
        f"install: {args.install} ({wheel.name}), .pth files: {', '.join(pths)}",
        f"interpreter: {sys.executable} (Python {sys.version.split()[0]})",
        "",
        "| arm | `python -c pass` ms (wall, median) | ms (cpu, median) |",
        "|---|---|---|",
        f"| bare venv, the project's .pth files renamed away | {med['without_wall']:.2f} | {med['without_cpu']:.2f} |",
        f"| bare venv, as installed | {med['with_wall']:.2f} | {med['with_cpu']:.2f} |",
        "",
        f"modules the project's .pth lines import ({import_ms:.2f} ms cumulative, `-X importtime`, median): "
        + " ".join(modules),
        f"(wall {time.perf_counter() - t0:.1f}s, {args.runs} pairs, {args.importtime_runs} importtime runs)",
        f"startup: {args.install} install adds {diff['wall']:.2f} ms wall, {diff['cpu']:.2f} ms cpu to "
        f"`python -c pass` (median of paired differences; cpu {verdict} the {BUDGET_MS:g} ms budget)",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
