"""A reduced `ilora-eval demo` end to end: quick assets, three strategies, LoraHub with two seeds."""

import csv
import json

import pytest


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_reduced_demo_writes_consistent_outputs(tmp_path, capsys):
    from ilora_eval.cli import main

    out = tmp_path / "demo"
    rc = main(["demo", "--quick", "--root", str(tmp_path / "assets"), "--out", str(out),
               "--strategies", "base,lorahub,retrieve_fuse", "--embedder", "hashing", "--seeds", "1,2"])
    assert rc == 0
    printed = capsys.readouterr().out
    # the two LoraHub seeds are one group, reported as mean ± sd, and it is the baseline
    assert "| lorahub (baseline) | 1,2 |" in printed
    rows = read_csv(out / "table.csv")
    table = {r["name"]: r for r in rows}
    seeds_row = next(r for r in rows if r["kind"] == "seeds")
    assert [k for k in seeds_row if k in ("base", "lorahub", "retrieve_fuse")] == ["base", "lorahub", "retrieve_fuse"]
    assert seeds_row["lorahub"] == "1,2"
    # every number in the table is the mean of what lm-eval wrote for the group's runs
    scored = 0
    for label, seeds in (("base", [1]), ("lorahub", [1, 2]), ("retrieve_fuse", [1])):
        data = []
        for seed in seeds:
            (res,) = list((out / "runs" / f"{label}_seed{seed}").glob("results_*.json"))
            data.append(json.loads(res.read_text()))
            assert data[-1]["config"]["ilora_strategy"] == label
            scored += sum(n["effective"] for n in data[-1]["n-samples"].values())
        for task in ("demo_mixed", "demo_compose"):
            scores = [d["results"][task]["exact_match,none"] for d in data]
            assert float(table[task][label]) == pytest.approx(sum(scores) / len(scores))
            if len(scores) > 1:
                assert float(table[task][f"{label} sd"]) == pytest.approx(abs(scores[0] - scores[1]) / 2 ** 0.5)
    # the base model cannot do the skills without its adapters
    assert float(table["demo_mixed"]["base"]) < 0.1
    assert float(table["demo_mixed"]["retrieve_fuse"]) > float(table["demo_mixed"]["base"])
    # the report, its pictures and the data behind them
    for name in ("intervals.png", "winloss.png", "adapter_usage_retrieve_fuse.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "](intervals.png)" in report and "](adapter_usage_retrieve_fuse.png)" in report and "best" in report
    # every scored document of every run was routed and counts once in the adapter usage
    usage = read_csv(out / "adapter_usage.csv")
    assert len(list((out / "runs").glob("*/ilora_routing_*.jsonl"))) == 4
    assert sum(float(u["usage"]) for u in usage) == pytest.approx(scored)
