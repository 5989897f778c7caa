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


def test_hook_is_cheap_and_imports_nothing_heavy():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import sys; print('lm_eval' in sys.modules, 'torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False False"
    hook = [line for line in proc.stderr.splitlines() if line.rstrip().endswith("ilora_eval._lm_eval_hook")]
    assert hook, "the .pth start-up hook is not installed"
    cumulative_us = int(hook[0].split("|")[1])
    assert cumulative_us < 20_000


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
