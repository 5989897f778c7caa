"""--output_path that lm-eval cannot save into is refused before any work (issue #16.7); an
--output_path ending in .json gets its routing log under the name `compare` and `export` look for."""

import json
import sys

import pytest

import tiny
from ilora_eval.errors import IloraError
from ilora_eval.records import date_id_of, is_results_name, routing_log_for


def cli(monkeypatch, base, lib, tasks, out, extra=()):
    from lm_eval.__main__ import cli_evaluate

    monkeypatch.setattr(sys, "argv", [
        "lm_eval", "--model", "ilora", "--model_args",
        f"pretrained={base},library={lib},strategy=retrieve_fuse,top_k=2,embedder=hashing,fit_cache=false",
        "--include_path", str(tasks), "--tasks", "out_mc", "--device", "cpu", "--limit", "3",
        "--output_path", str(out), *extra])
    cli_evaluate()


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    tiny.write_task(d, "out_mc", "multiple_choice")
    return d


@pytest.mark.parametrize("through_file", [False, True])
def test_output_path_through_a_file_is_refused_before_any_work(llama, tasks, tmp_path, monkeypatch, through_file):
    from ilora_eval.router import Router

    base, lib = llama
    existing = tmp_path / "notes"
    existing.write_text("keep me\n")
    out = existing / "run.json" if through_file else existing

    def no_work(*a, **k):
        raise AssertionError("the evaluation started although its results could not be saved")

    monkeypatch.setattr(Router, "prepare_run", no_work)
    with pytest.raises(IloraError, match=f"--output_path {out}: {existing} is a file"):
        cli(monkeypatch, base, lib, tasks, out)
    assert existing.read_text() == "keep me\n"


def test_json_output_path_gets_its_routing_log_beside_the_results(llama, tasks, tmp_path, monkeypatch):
    base, lib = llama
    cli(monkeypatch, base, lib, tasks, tmp_path / "out" / "res.json", ["--log_samples"])
    results = sorted((tmp_path / "out").glob("res_*.json"))
    assert len(results) == 1 and is_results_name(results[0].name)
    stamp = results[0].stem[len("res_"):]
    # lm-eval's samples carry the same timestamp: one rule names all side files
    assert (tmp_path / "out" / f"samples_out_mc_{stamp}.jsonl").is_file()
    assert date_id_of(results[0]) == stamp
    log = routing_log_for(results[0])
    assert log == tmp_path / "out" / f"ilora_routing_{stamp}.jsonl"
    assert sorted(json.loads(x)["doc_id"] for x in log.read_text().splitlines()) == [0, 1, 2]

    from ilora_eval.compare.results import find_routing_log, load_run

    assert find_routing_log(load_run(results[0])) == log


def test_export_pairs_a_json_output_path_run_with_its_routing_log(llama, tasks, tmp_path, monkeypatch):
    base, lib = llama
    cli(monkeypatch, base, lib, tasks, tmp_path / "out" / "res.json")
    from ilora_eval.export import load_run, routing_log_path

    results = next((tmp_path / "out").glob("res_*.json"))
    assert routing_log_path(load_run(results)) == routing_log_for(results)
    # the folder is found by both tools too: export's newest results file, compare's recursive search
    from ilora_eval.compare.results import find_results_files
    from ilora_eval.export import find_results

    assert find_results(tmp_path / "out") == results
    assert find_results_files([str(tmp_path / "out")]) == [results]


def test_names():
    stamp = "2026-12-02T00-48-42.123456"
    for name in (f"results_{stamp}.json", f"res_{stamp}.json", f"my_run_{stamp}.json", "results_2026-12-02T00-48-42.json"):
        assert is_results_name(name), name
        assert date_id_of(f"d/{name}") == name[:-5].rsplit("_", 1)[1]
    for name in ("res.json", f"samples_t_{stamp}.jsonl", f"ilora_routing_{stamp}.jsonl", "config.json"):
        assert not is_results_name(name), name
    assert str(routing_log_for(f"d/my_run_{stamp}.json")) == f"d/ilora_routing_{stamp}.jsonl"


def test_a_routing_log_that_cannot_be_written_warns_like_lm_eval(tmp_path, capsys):
    from ilora_eval.distributed import Collectives
    from ilora_eval.records import RoutingRecords, write_log_after_save

    blocker = tmp_path / "file"
    blocker.write_text("")
    write_log_after_save(RoutingRecords(Collectives()), blocker / "model", "2026-12-02T00-48-42")
    assert "could not save the routing log" in capsys.readouterr().err
