"""The stock `lm_eval` command finds `--model ilora` after pip install, for decoder-only and T5."""

import json
import os
import subprocess
import sys

import pytest

import tiny


def lm_eval(args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lm_eval", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kind,strategy,extra", [
    ("llama", "ilora", "top_k=3,budget=4,n_adapt=5"),
    ("t5", "lorahub", "n_modules=3,budget=4"),
])
def test_stock_cli_runs_ilora_and_writes_results(kind, strategy, extra, request, tmp_path):
    base, lib = request.getfixturevalue(kind)
    tasks = tmp_path / "tasks"
    tiny.write_task(tasks, "cli_gen")
    tiny.write_task(tasks, "cli_mc", "multiple_choice")
    out = tmp_path / "out"
    proc = lm_eval(["--model", "ilora", "--model_args",
                    f"pretrained={base},library={lib},strategy={strategy},embedder=hashing,{extra}", "--device", "cpu",
                    "--include_path", str(tasks), "--tasks", "cli_gen,cli_mc", "--batch_size", "4",
                    "--output_path", str(out), "--log_samples"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = list(out.rglob("results_*.json"))
    data = json.loads(results.read_text())
    assert data["config"]["model"] == "ilora"
    assert data["config"]["ilora_strategy"] == strategy
    assert len(data["config"]["ilora_library_hash"]) == 16
    assert {"cli_gen", "cli_mc"} <= set(data["results"])
    assert 0.0 <= data["results"]["cli_mc"]["acc,none"] <= 1.0
    (routing,) = list(out.rglob("ilora_routing_*.jsonl"))
    assert len(routing.read_text().splitlines()) == 12  # 6 docs per task, one line each


def test_hook_registers_ilora_and_keeps_stock_models():
    code = ("import lm_eval.api.registry as r; print(r.get_model('ilora').__name__, r.get_model('hf').__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["IloraLM", "HFLM"], proc.stderr[-2000:]


# The hook runs in every Python process: the tests below pin WHAT it imports (nothing beyond its own two
# modules), never how long that takes; `python -m benchmarks.startup` measures the time.
HOOK_OWN = {"ilora_eval", "ilora_eval._lm_eval_hook"}


def _installed_pth():
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    found = [os.path.join(d, "ilora_eval_hook.pth") for d in dirs if os.path.isfile(os.path.join(d, "ilora_eval_hook.pth"))]
    assert found, f"ilora_eval_hook.pth is in none of {dirs}: reinstall with pip install -e ."
    return found[0]


def _bare_python(code):
    """`python -S`: no site-packages processing, so no .pth of any package runs; the installed
    ilora_eval (and lm-eval) stay importable through this process's sys.path. The package's own
    parent comes first: an editable install finds it through a .pth-installed finder otherwise."""
    import ilora_eval

    paths = [os.path.dirname(os.path.dirname(ilora_eval.__file__)), *filter(None, sys.path)]
    return subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {paths!r}\n{code}"],
                          capture_output=True, text=True, timeout=300)


def test_hook_pth_imports_only_its_own_modules(tmp_path):
    hook_dir, empty_dir = tmp_path / "with_hook", tmp_path / "empty"
    hook_dir.mkdir()
    empty_dir.mkdir()
    (hook_dir / "ilora_eval_hook.pth").write_bytes(open(_installed_pth(), "rb").read())
    # The empty dir first, so whatever addsitedir itself imports is loaded before the snapshot.
    proc = _bare_python(f"import site; site.addsitedir({str(empty_dir)!r}); before = set(sys.modules)\n"
                        f"site.addsitedir({str(hook_dir)!r}); print(*sorted(set(sys.modules) - before))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    added = set(proc.stdout.split())
    assert "ilora_eval._lm_eval_hook" in added, "the .pth did not import the hook module"
    assert added <= HOOK_OWN, f"the start-up hook imports {sorted(added - HOOK_OWN)}"


def test_installed_hook_loads_no_module_at_startup():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import sys; print('lm_eval' in sys.modules, 'torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False False", proc.stderr[-2000:]
    rows = [(len(name) - len(name.lstrip()), name.strip()) for name in
            (line.split("|")[-1] for line in proc.stderr.splitlines() if line.startswith("import time:"))]
    hook = [i for i, (_, name) in enumerate(rows) if name == "ilora_eval._lm_eval_hook"]
    assert hook, "the .pth start-up hook is not installed: pip install -e ."
    # importtime lists a module after its imports, one level deeper than itself.
    i = j = hook[0]
    while j > 0 and rows[j - 1][0] > rows[i][0]:
        j -= 1
    assert {name for _, name in rows[j:i]} <= HOOK_OWN


def test_hook_registers_at_once_when_lm_eval_models_is_already_imported():
    proc = _bare_python("import lm_eval.models, lm_eval.api.registry as r; had = 'ilora' in r.model_registry\n"
                        "import ilora_eval._lm_eval_hook; print(had, 'ilora' in r.model_registry, 'hf' in r.model_registry)")
    assert proc.stdout.split() == ["False", "True", "True"], proc.stderr[-2000:]


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ilora_eval.cli", "library", "build", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_bad_library_under_stock_cli_is_one_line(llama, tmp_path):
    base, _ = llama
    tasks = tmp_path / "tasks"
    tiny.write_task(tasks, "cli_gen")
    proc = lm_eval(["--model", "ilora", "--model_args", f"pretrained={base},library={tmp_path / 'missing'}",
                    "--device", "cpu", "--include_path", str(tasks), "--tasks", "cli_gen"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"ilora-eval: error: library {tmp_path / 'missing'} does not exist" in proc.stderr
