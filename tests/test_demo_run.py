"""A reduced `ilora-eval demo` end to end: quick assets, three strategies, one seed."""

import csv
import json

import pytest


@pytest.mark.slow
def test_reduced_demo_writes_consistent_outputs(tmp_path, capsys):
    from ilora_eval.cli import main

    out = tmp_path / "demo"
    rc = main(["demo", "--quick", "--root", str(tmp_path / "assets"), "--out", str(out),
               "--strategies", "base,lorahub,retrieve_fuse", "--embedder", "hashing"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| lorahub | 1 |" in printed
    rows = {r["strategy"]: r for r in csv.DictReader(open(out / "table.csv"))}
    assert list(rows) == ["base", "lorahub", "retrieve_fuse"]
    # every number in the table is the one lm-eval wrote for that run
    for label in rows:
        (res,) = list((out / "runs" / f"{label}_seed1").glob("results_*.json"))
        data = json.loads(res.read_text())
        assert data["config"]["ilora_strategy"] == label
        for task in ("demo_mixed", "demo_compose"):
            assert float(rows[label][task]) == pytest.approx(data["results"][task]["exact_match,none"])
    # the base model cannot do the skills without its adapters
    assert float(rows["base"]["demo_mixed"]) < 0.1
    assert float(rows["retrieve_fuse"]["demo_mixed"]) > float(rows["base"]["demo_mixed"])
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best" in (out / "table.md").read_text()
