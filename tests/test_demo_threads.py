"""Stability of the demo's evaluation: on the shipped assets, one and two torch threads give the same
answer for every document (a training-free strategy, and LoraHub / iLoraComp whose weight searches
run under the thread count too). The demo runs on one thread by default; this shows the count does
not change what it reports."""

import json

import pytest

from ilora_eval.demo.build import shipped_assets

TASKS = ["demo_mix_six", "demo_spell_min", "demo_para_max"]
STRATEGIES = ["retrieve_fuse", "lorahub", "ilora"]


def _answers(out):
    """(run, task, doc_id) -> (the model's answer, exact match) from the samples files."""
    got = {}
    for samples in sorted(out.glob("runs/*/samples_*.jsonl")):
        task = samples.name[len("samples_"):].rsplit("_", 1)[0]
        for line in samples.read_text().splitlines():
            row = json.loads(line)
            got[(samples.parent.name, task, row["doc_id"])] = (row["filtered_resps"], row["exact_match"])
    return got


def _weights(out):
    """run -> the learned compositions recorded in the results config."""
    found = {}
    for res in sorted(out.glob("runs/*/results_*.json")):
        config = json.loads(res.read_text())["config"]
        found[res.parent.name] = config["ilora_tasks"]  # per task: adaptation ids, learned adapters, weights
    return found


@pytest.mark.slow
def test_one_and_two_threads_give_the_same_answers(tmp_path):
    from ilora_eval.demo.run import run_demo

    assets = shipped_assets()
    assets.tasks = TASKS
    outs = {}
    for threads in (1, 2):
        outs[threads] = tmp_path / f"threads{threads}"
        run_demo(assets, outs[threads], seeds=(1,), strategies=STRATEGIES, embedder="hashing", limit=8,
                 threads=threads, cache=tmp_path / f"cache{threads}", fit_cache=False, report_out=False,
                 progress=lambda msg: None)
    one, two = _answers(outs[1]), _answers(outs[2])
    assert len(one) == len(STRATEGIES) * len(TASKS) * 8
    assert one.keys() == two.keys()
    differ = sorted(k for k in one if one[k] != two[k])
    assert not differ, f"{len(differ)} of {len(one)} answers differ between 1 and 2 threads: {differ[:5]}"
    assert _weights(outs[1]) == _weights(outs[2])


@pytest.mark.slow
def test_worker_processes_give_the_same_answers_as_one_process(tmp_path):
    """The full demo spreads its runs over 2 worker processes (--jobs); each run is independent and
    seeded, so every document's answer is the one a single process gives."""
    from ilora_eval.demo.run import run_demo

    assets = shipped_assets()
    assets.tasks = TASKS[:2]
    outs = {}
    for jobs in (1, 2):
        outs[jobs] = tmp_path / f"jobs{jobs}"
        result = run_demo(assets, outs[jobs], seeds=(1, 2), strategies=["retrieve_fuse", "lorahub"],
                          embedder="hashing", limit=4, jobs=jobs, cache=tmp_path / f"cache{jobs}", report_out=False,
                          progress=lambda msg: None)
        assert [(r.strategy, r.seed) for r in result.runs] == [
            ("retrieve_fuse", 1), ("lorahub", 1), ("retrieve_fuse", 2), ("lorahub", 2)]
    one, two = _answers(outs[1]), _answers(outs[2])
    assert len(one) == 2 * 2 * 2 * 4 and one == two
    assert _weights(outs[1]) == _weights(outs[2])
