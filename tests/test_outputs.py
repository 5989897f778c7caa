"""Runs of several configurations in one --output_path: a folder each, never merged; the routing
log beside its results file, with its timestamp."""

import json
import sys

import tiny


def test_each_configuration_gets_its_own_folder_and_routing_log(llama, tmp_path, monkeypatch):
    from lm_eval.__main__ import cli_evaluate

    base, lib = llama
    tasks = tmp_path / "tasks"
    tiny.write_task(tasks, "out_gen")
    out = tmp_path / "out"
    configs = ["strategy=retrieve_fuse,top_k=2", "strategy=lorahub,n_modules=2,budget=2,seed=1",
               "strategy=lorahub,n_modules=2,budget=2,seed=2", "strategy=lorahub,n_modules=2,budget=2,seed=2"]
    for args in configs:
        monkeypatch.setattr(sys, "argv", [
            "lm_eval", "--model", "ilora", "--model_args",
            f"pretrained={base},library={lib},{args},embedder=hashing,fit_cache=false",
            "--include_path", str(tasks), "--tasks", "out_gen", "--device", "cpu", "--limit", "3",
            "--output_path", str(out)])
        cli_evaluate()
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name.split("__ilora-")[1].rsplit("-lib", 1)[0] for p in folders] == [
        "lorahub-budget2-n_modules2-seed1", "lorahub-budget2-n_modules2-seed2", "retrieve_fuse-top_k2-seed0"]
    assert all(p.name.startswith(str(base).replace("/", "__")) for p in folders)
    repeated = folders[1]
    results = sorted(repeated.glob("results_*.json"))
    assert len(results) == 2  # the repeated configuration: two results files side by side, none overwritten
    for folder in folders:
        for res in folder.glob("results_*.json"):
            stamp = res.stem[len("results_"):]
            log = folder / f"ilora_routing_{stamp}.jsonl"
            lines = [json.loads(x) for x in log.read_text().splitlines()]
            assert sorted(r["doc_id"] for r in lines) == [0, 1, 2]
            config = json.loads(res.read_text())["config"]
            assert config["ilora_run_name"].endswith(folder.name.split("__")[-1])
