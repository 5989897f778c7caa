"""`ilora-eval demo --quick` end to end on the SHIPPED assets: three strategies, two seeds under the
per-seed protocol, the report, the run record, and the output-folder rules (never mix an earlier
demo's files into a report, never touch the shipped assets)."""

import csv
import json
import random

import pytest

from ilora_eval.demo.build import check_files, shipped_assets, shipped_root
from ilora_eval.demo.tasks import N_ADAPT, read_jsonl

STRATEGIES = "base,lorahub,retrieve_fuse"


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _demo(out, *extra):
    from ilora_eval.cli import main

    return main(["demo", "--quick", "--out", str(out), "--embedder", "hashing", *extra])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert _demo(out, "--strategies", STRATEGIES, "--seeds", "1,2") == 0
    return out


@pytest.mark.slow
def test_quick_demo_reports_every_strategy_over_the_seeds(demo):
    from ilora_eval.demo.cli import QUICK_LIMIT, QUICK_TASKS

    record = json.loads((demo / "demo.json").read_text())
    shipped = shipped_assets()
    assert record["assets"] == {"hash": shipped.hash, "shipped": True, "skills": shipped.skills,
                                "tasks": list(QUICK_TASKS)}
    assert record["seeds"] == [1, 2] and record["strategies"] == STRATEGIES.split(",")
    table = {r["name"]: r for r in read_csv(demo / "table.csv")}
    for label in STRATEGIES.split(","):
        data = []
        for seed in (1, 2):
            (res,) = list((demo / "runs" / f"{label}_seed{seed}").glob("results_*.json"))
            data.append(json.loads(res.read_text()))
            assert data[-1]["config"]["ilora_strategy"] == label
            assert all(n["effective"] == QUICK_LIMIT for n in data[-1]["n-samples"].values())
        for task in QUICK_TASKS:
            scores = [d["results"][task]["exact_match,none"] for d in data]
            # every number in the table is the seed mean of what lm-eval wrote
            assert float(table[task][label]) == pytest.approx(sum(scores) / 2)
    assert float(table["demo_mix_six"]["base"]) < 0.1  # the base cannot do the skills without adapters
    report = (demo / "report.md").read_text()
    assert shipped.hash in report and "](intervals.png)" in report
    assert not check_files(shipped_root(), json.loads((shipped_root() / "manifest.json").read_text()))


@pytest.mark.slow
def test_each_seed_redraws_the_adaptation_and_scored_documents(demo):
    """The per-seed protocol of the task pack: seed S shuffles the task's pool with random.Random(S),
    the first 5 adapt, the next documents are scored (here the first QUICK_LIMIT of them)."""
    from ilora_eval.demo.cli import QUICK_LIMIT

    assets = shipped_assets()
    for seed in (1, 2):
        (res,) = list((demo / "runs" / f"lorahub_seed{seed}").glob("results_*.json"))
        config = json.loads(res.read_text())["config"]
        for task in ("demo_mix_six", "demo_twice_max"):
            pool = read_jsonl(assets.data_file(task))
            order = list(range(len(pool)))
            random.Random(seed).shuffle(order)
            (samples,) = list(res.parent.glob(f"samples_{task}_*.jsonl"))
            scored = [json.loads(line)["doc"]["input"] for line in samples.read_text().splitlines()]
            assert scored == [pool[i]["input"] for i in order[N_ADAPT:N_ADAPT + QUICK_LIMIT]]
            fit = config["ilora_tasks"][task]
            assert fit["adapt_seed"] == seed
            assert fit["adaptation_doc_ids"] == order[:N_ADAPT]  # the pool positions of the 5 adaptation documents


@pytest.mark.slow
def test_output_folder_is_never_mixed(demo, tmp_path, capsys):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(demo, out)
    assert _demo(out, "--strategies", "base") == 2
    assert "holds an earlier demo's report; pass --overwrite" in capsys.readouterr().err
    assert _demo(out, "--overwrite", "--strategies", "base,retrieve_fuse") == 0
    # the earlier demo's lorahub runs and its seed-2 runs are gone, not mixed into the new report
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["base_seed1", "retrieve_fuse_seed1"]
    record = json.loads((out / "demo.json").read_text())
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "demo.json")
    assert record["files"] == on_disk
    assert "lorahub" not in (out / "table.csv").read_text()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert _demo(foreign, "--overwrite") == 2
    assert "holds no demo output" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


def test_an_interrupted_demo_is_replaced_only_with_overwrite(tmp_path):
    from ilora_eval.demo.run import prepare_out, start_record
    from ilora_eval.errors import IloraError

    out = tmp_path / "out"
    out.mkdir()
    start_record(out)  # what the demo writes before its first run
    (out / "runs" / "lorahub_seed1").mkdir(parents=True)
    (out / "runs" / "lorahub_seed1" / "results_x.json").write_text("{}")
    with pytest.raises(IloraError, match="--overwrite"):
        prepare_out(out, overwrite=False)
    assert prepare_out(out, overwrite=True) == out and not any(out.iterdir())
    start_record(out)
    (out / "runs").mkdir()
    (out / "notes.txt").write_text("mine")  # not the demo's: never deleted, and the folder is refused
    with pytest.raises(IloraError, match="notes.txt"):
        prepare_out(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
