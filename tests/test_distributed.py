"""Data-parallel runs: two CPU processes (torchrun, gloo) shard documents and agree with one."""

import json
import os
import subprocess
import sys

import pytest

import tiny


def samples(out):
    per_doc = {}
    for f in out.rglob("samples_*.jsonl"):
        for line in f.read_text().splitlines():
            s = json.loads(line)
            per_doc[(f.name[len("samples_"):].split("_2")[0], s["doc_id"])] = s["resps"]
    return per_doc


@pytest.mark.slow
def test_two_processes_match_one_process(llama, tmp_path):
    base, lib = llama
    tasks = tmp_path / "tasks"
    tiny.write_task(tasks, "dp_gen")
    tiny.write_task(tasks, "dp_mc", "multiple_choice")
    args = ["--model", "ilora", "--model_args",
            f"pretrained={base},library={lib},strategy=ilora,embedder=hashing,top_k=3,budget=5,fit_cache=false",
            "--device", "cpu", "--include_path", str(tasks), "--tasks", "dp_gen,dp_mc", "--batch_size", "3",
            "--log_samples"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    two = subprocess.run([*torchrun, "-m", "lm_eval", *args, "--output_path", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Building contexts for dp_mc on rank 1" in two.stderr  # documents really were sharded
    one = subprocess.run([sys.executable, "-m", "lm_eval", *args, "--output_path", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = samples(tmp_path / "two"), samples(tmp_path / "one")
    assert a.keys() == b.keys() and len(a) == 12
    for k in a:
        for x, y in zip(a[k], b[k]):
            x, y = x[0], y[0]
            assert (x[0] == pytest.approx(y[0], abs=1e-5)) if isinstance(x, list) else x == y, k
    (r_two,) = list((tmp_path / "two").rglob("results_*.json"))
    (r_one,) = list((tmp_path / "one").rglob("results_*.json"))
    learned_two = json.loads(r_two.read_text())["config"]["ilora_tasks"]
    learned_one = json.loads(r_one.read_text())["config"]["ilora_tasks"]
    assert {t: v["learned"] for t, v in learned_two.items()} == {t: v["learned"] for t, v in learned_one.items()}
    (routing,) = list((tmp_path / "two").rglob("ilora_routing_*.jsonl"))  # written once, by rank 0
    rows = [json.loads(line) for line in routing.read_text().splitlines()]
    assert sorted((r["task"], r["doc_id"]) for r in rows) == sorted(a)
