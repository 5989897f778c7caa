"""Every way of building the package carries the start-up hook that registers `--model ilora`.

Builds run offline against the installed setuptools (`--no-build-isolation`, the same backend calls
`python -m build --no-isolation` makes), from a copy of the checkout without build leftovers: a stale
`*.egg-info/SOURCES.txt` would put files into the sdist that MANIFEST.in forgot.
"""

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PTH = "ilora_eval_hook.pth"
HOOK_MODULE = "ilora_eval._lm_eval_hook"
LEFTOVERS = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache",
                                   ".benchmarks", ".cache", ".whl", ".gl", "results")


def _copy_checkout(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files not ignored), else everything but leftovers."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dest, ignore=LEFTOVERS)
        return dest
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():  # listed but deleted in the working tree
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _backend(hook: str, src: Path, out: Path) -> Path:
    code = f"import setuptools.build_meta as b; print(b.{hook}({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


def _pip_wheel(target: Path, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(target)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("ilora_eval-*.whl")
    return wheel


def _assert_pth_names_hook(text: str) -> None:
    imports = [line.split() for line in text.splitlines() if line.startswith(("import ", "import\t"))]
    assert [HOOK_MODULE] in [words[1:] for words in imports], f"{PTH} does not import {HOOK_MODULE}: {text!r}"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return _copy_checkout(tmp_path_factory.mktemp("checkout") / "src")


@pytest.fixture(scope="module")
def wheel(checkout, tmp_path_factory):
    return _pip_wheel(checkout, tmp_path_factory.mktemp("wheel"))


def test_wheel_carries_the_hook_the_model_and_the_tasks(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        _assert_pth_names_hook(zf.read(PTH).decode())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        record = zf.read(f"{dist_info}/RECORD").decode()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    assert PTH in {row.split(",")[0] for row in record.splitlines()}, "pip uninstall would leave the .pth behind"
    assert {"ilora_eval/_lm_eval_hook.py", "ilora_eval/model_wrappers/ilora_lm.py"} <= names
    assert any(n.startswith("ilora_eval/tasks/") and n.endswith(".yaml") for n in names)
    assert not any(n.split("/")[0] in {"model_wrappers", "tasks"} for n in names)
    assert "[lm_eval.models]" in entry_points and "ilora = ilora_eval.model_wrappers.ilora_lm:IloraLM" in entry_points


def test_wheel_built_from_the_sdist_equals_the_direct_wheel(checkout, wheel, tmp_path):
    sdist = _backend("build_sdist", checkout, tmp_path / "sdist")
    with tarfile.open(sdist) as tf:
        assert f"{sdist.name[:-len('.tar.gz')]}/{PTH}" in tf.getnames()
    from_sdist = _pip_wheel(sdist, tmp_path / "wheel")
    with zipfile.ZipFile(from_sdist) as zf:
        _assert_pth_names_hook(zf.read(PTH).decode())
        got = sorted(zf.namelist())
    with zipfile.ZipFile(wheel) as zf:
        assert got == sorted(zf.namelist())


def test_editable_wheel_carries_the_hook(checkout, tmp_path):
    editable = _backend("build_editable", checkout, tmp_path)
    with zipfile.ZipFile(editable) as zf:
        _assert_pth_names_hook(zf.read(PTH).decode())


def test_wheel_carries_the_unseen_task_template(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "ilora_eval/tasks/unseen/_unseen_task_template.yaml.txt" in names
    assert "ilora_eval/tasks/unseen/_unseen_task_template.yaml" not in names  # lm-eval would index it


def _bare_venv_with(wheel: Path, root: Path) -> Path:
    """A venv without pip or any other .pth file holding `wheel` unpacked, as pip installs it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return python


STARTUP_PROBE = ("import sys; print(*sorted(m for m in sys.modules if 'ilora' in m or 'editable' in m))\n"
                 "print(*sorted({'pathlib', 'importlib.util', 'importlib.abc', 'itertools', 'lm_eval', 'torch'}"
                 " & set(sys.modules)))")


def test_editable_install_imports_only_its_finder_and_the_hook_at_start_up(checkout, tmp_path):
    """The README's install (`pip install -e .`): setuptools' generic finder for the package-dir
    mapping imports pathlib and importlib.util in every interpreter (~25 ms); setup.py's own finder
    and the hook import nothing else (`python -m benchmarks.startup` measures the time)."""
    editable = _backend("build_editable", checkout, tmp_path / "dist")
    python = _bare_venv_with(editable, tmp_path / "venv")
    env = {"PATH": "/usr/bin:/bin"}
    bare = subprocess.run([str(python), "-S", "-c", STARTUP_PROBE], capture_output=True, text=True, env=env,
                          timeout=60, check=True).stdout.splitlines()
    proc = subprocess.run([str(python), "-c", STARTUP_PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-2000:]
    ours, heavy = (proc.stdout.splitlines() + [""])[:2]
    finder = [m for m in ours.split() if m.startswith("__editable__")]
    assert len(finder) == 1 and set(ours.split()) == {finder[0], "ilora_eval", "ilora_eval._lm_eval_hook"}
    assert heavy.split() == bare[1].split(), f"start-up now imports {set(heavy.split()) - set(bare[1].split())}"
    # ... and the mapping works: the top-level folders of the checkout are the package's subpackages
    where = subprocess.run([str(python), "-c", "import ilora_eval.model_wrappers as m, ilora_eval.tasks as t, "
                            "ilora_eval.tasks.unseen as u; print(m.__path__[0]); print(t.__path__[0]); "
                            "print(list(u.__path__)[0])"], capture_output=True, text=True, env=env, timeout=60)
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.split() == [str(checkout / "model_wrappers"), str(checkout / "tasks"),
                                    str(checkout / "tasks" / "unseen")]
