"""`ilora-eval compare` never merges, averages or counts unlike things (issue #16 items 2, 3, 4, 10).

tests/fixtures/compare/lm_eval_0.4.13/ holds four runs of the stock `lm_eval` CLI (0.4.13, `--model hf`
on a tiny random llama, one 8-document multiple-choice task, `--log_samples`), with the machine's
paths replaced by `org/tiny-llama` and `tasks/`:
  fewshot3_seed0  --num_fewshot 3 --seed 0      fewshot0_seed1  --num_fewshot 0 --seed 1
  limit4          --limit 4                     limit8          --limit 8
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ilora_eval import cli, compare
from ilora_eval.compare import seeds as seeds_mod
from ilora_eval.errors import IloraError

REAL = Path(__file__).parent / "fixtures" / "compare" / "lm_eval_0.4.13"
FAST = compare.Settings(bootstrap=300, permutations=300)


def real(name):
    (path,) = (REAL / name).rglob("results_*.json")
    return path


def samples(results):
    (path,) = results.parent.glob("samples_*.jsonl")
    return {r["doc_id"]: r["acc"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture
def run_cli(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"compare": "ilora_eval.compare"})

    def _run(*argv):
        rc = cli.main(["compare", *map(str, argv), "--bootstrap", "300", "--permutations", "300", "--no-chart"])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run


def test_real_runs_with_another_fewshot_count_are_two_groups(tmp_path):
    """The issue's case: `--num_fewshot 3 --seed 0` and `--num_fewshot 0 --seed 1` of one model."""
    assert json.loads(real("fewshot3_seed0").read_text())["n-shot"] == {"cmp_mc": 3}  # what lm-eval records
    c = compare.compare([str(real("fewshot3_seed0")), str(real("fewshot0_seed1"))], out_dir=tmp_path / "cmp",
                        settings=FAST, chart=False)
    assert [r.label for r in c.runs] == ["hf(num_fewshot=3,seed=0)@tiny-llama", "hf(num_fewshot=0,seed=1)@tiny-llama"]
    assert c.labels == ["hf(num_fewshot=3)@tiny-llama", "hf(num_fewshot=0)@tiny-llama"]
    assert c.separation == ["num_fewshot: 3 / 0"]
    assert "Settings that separate the groups: num_fewshot: 3 / 0." in (tmp_path / "cmp" / "report.md").read_text()
    # few-shot examples are drawn by seed: one run of it has unmeasured seed variance; 0-shot greedy has none
    assert c.seed_status == {"hf(num_fewshot=3)@tiny-llama": seeds_mod.ONE_SEED,
                             "hf(num_fewshot=0)@tiny-llama": "deterministic"}


def write_run(directory, stamp, seed, values, top=None, config=None, tasks=None):
    """A stock-model results JSON shaped like lm-eval 0.4.13's (+ samples): `top` adds top-level keys
    (the EvaluationTracker's chat_template, system_instruction...), `config` config keys."""
    directory.mkdir(parents=True, exist_ok=True)
    tasks = tasks or {"t": ("acc", values)}
    results, n_samples, hib = {}, {}, {}
    for task, (metric, vals) in tasks.items():
        results[task] = {"alias": task, f"{metric},none": float(np.mean(vals))}
        n_samples[task] = {"original": len(vals), "effective": len(vals)}
        hib[task] = {metric: "perplexity" not in metric}
        (directory / f"samples_{task}_{stamp}.jsonl").write_text("".join(
            json.dumps({"doc_id": i, "filter": "none", metric: v, "doc_hash": f"h{i}"}) + "\n"
            for i, v in enumerate(vals)))
    data = {"results": results, "configs": {}, "n-shot": {t: 0 for t in tasks}, "n-samples": n_samples,
            "higher_is_better": hib,
            "config": {"model": "hf", "model_args": {"pretrained": "org/m"}, "limit": None, "gen_kwargs": {},
                       "random_seed": seed, **(config or {})},
            "system_instruction": None, "system_instruction_sha": None, "fewshot_as_multiturn": None,
            "chat_template": None, "chat_template_sha": None, **(top or {})}
    path = directory / f"results_{stamp}.json"
    path.write_text(json.dumps(data))
    return str(path)


TEMPLATE = {"chat_template": "{{ messages }}", "chat_template_sha": "a1b2c3d4e5f6"}


@pytest.mark.parametrize("setting,top,config,shown", [
    ("chat template", TEMPLATE, None, "chat_template=a1b2c3d4"),
    ("system instruction", {"system_instruction": "Be brief.", "system_instruction_sha": "99887766aa"}, None,
     "system_instruction=99887766"),
    ("gen_kwargs", None, {"gen_kwargs": {"temperature": 0.7, "do_sample": True}},
     "gen_kwargs=do_sample:true+temperature:0.7"),
    ("gen_kwargs as lm-eval's string", None, {"gen_kwargs": "temperature=0.7"}, "gen_kwargs=temperature:0.7"),
    ("limit", None, {"limit": 3.0}, "limit=3"),
])
def test_each_prompt_setting_separates_groups(tmp_path, setting, top, config, shown):
    """Seeds 1 and 2 of one configuration are one group; a third run that differs only by the
    setting (and its seed) is another, its label shows the setting, the report says which it is."""
    same1 = write_run(tmp_path / "a", "2024-01-01T00-00-00.1", 1, [1, 0, 1])
    same2 = write_run(tmp_path / "b", "2024-01-01T00-00-00.2", 2, [1, 1, 1])
    other = write_run(tmp_path / "c", "2024-01-01T00-00-00.3", 3, [0, 0, 1], top=top, config=config)
    c = compare.compare([same1, same2, other], out_dir=None, settings=FAST)
    assert [len(g.runs) for g in c.groups] == [2, 1], setting
    assert shown in c.labels[1] and shown not in c.labels[0]
    assert len(c.separation) == 1 and c.separation[0].startswith(shown.split("=")[0] + ":")


def test_multiturn_only_counts_under_a_chat_template(tmp_path):
    """--fewshot_as_multiturn changes prompts only with --apply_chat_template (lm-eval's fewshot_context)."""
    plain = write_run(tmp_path / "a", "2024-01-01T00-00-00.1", 1, [1, 0], top={"fewshot_as_multiturn": False})
    plain2 = write_run(tmp_path / "b", "2024-01-01T00-00-00.2", 2, [1, 1], top={"fewshot_as_multiturn": True})
    assert len(compare.compare([plain, plain2], out_dir=None, settings=FAST).groups) == 1
    chat = write_run(tmp_path / "c", "2024-01-01T00-00-00.3", 1, [1, 0], top={**TEMPLATE, "fewshot_as_multiturn": False})
    chat2 = write_run(tmp_path / "d", "2024-01-01T00-00-00.4", 2, [1, 1], top={**TEMPLATE, "fewshot_as_multiturn": True})
    c = compare.compare([chat, chat2], out_dir=None, settings=FAST)
    assert len(c.groups) == 2 and c.separation == ["fewshot_as_multiturn: false / true"]


def test_labels_that_would_merge_unlike_runs_are_refused(run_cli, tmp_path):
    rc, _, err = run_cli(real("fewshot3_seed0"), real("fewshot0_seed1"), "--label", "hf_seed0", "--label", "hf_seed1",
                         "--out", tmp_path / "cmp")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("ilora-eval: error: ")
    assert "differ by more than the seed (num_fewshot: 3 / 0)" in err
    # the same labels on runs that differ only by seed are one group
    a = write_run(tmp_path / "a", "2024-01-01T00-00-00.1", 1, [1, 0])
    b = write_run(tmp_path / "b", "2024-01-01T00-00-00.2", 2, [1, 1])
    c = compare.compare([a, b], out_dir=None, labels=["hf_seed1", "hf_seed2"], settings=FAST)
    assert c.labels == ["hf"] and len(c.groups[0].runs) == 2


def test_means_never_mix_metric_kinds(tmp_path):
    """acc and exact_match are both shares of documents right and average together; a perplexity never does."""
    tasks = {"t_acc": ("acc", [1, 0, 1, 1]), "t_em": ("exact_match", [0, 0, 1, 0]),
             "t_ppl": ("word_perplexity", [12000.0, 2000.0, 500.0, 700.0])}
    a = write_run(tmp_path / "a", "2024-01-01T00-00-00.1", 0, None, tasks=tasks)
    b = write_run(tmp_path / "b", "2024-01-01T00-00-00.2", 0, None, config={"model_args": {"pretrained": "org/n"}},
                  tasks={"t_acc": ("acc", [1, 1, 1, 1]), "t_em": ("exact_match", [1, 0, 1, 0]),
                         "t_ppl": ("word_perplexity", [10.0, 20.0, 30.0, 40.0])})
    c = compare.compare([a, b], out_dir=tmp_path / "cmp", baseline="hf@n", settings=FAST, chart=False)
    rows = {(m.metric, m.kind): m for m in c.means if m.group == "all"}
    assert set(rows) == {("accuracy", "mean_unweighted"), ("accuracy", "mean_weighted"),
                         ("word_perplexity", "mean_unweighted"), ("word_perplexity", "mean_weighted")}
    acc = rows[("accuracy", "mean_unweighted")]
    assert acc.tasks == ["t_acc", "t_em"]
    assert acc.cells["hf@m"].mean == pytest.approx((0.75 + 0.25) / 2)
    assert rows[("word_perplexity", "mean_unweighted")].cells["hf@m"].mean == pytest.approx(3800.0)
    assert all(len({c.choices[[ch.task for ch in c.choices].index(t)].kind for t in m.tasks}) == 1 for m in c.means)
    assert c.overall is acc and c.intervals[0].mean == pytest.approx(0.5)
    assert any("never across kinds" in n and "word_perplexity (1 task: t_ppl)" in n for n in c.notes)
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| **mean, unweighted (2 tasks)** |" in table and "| **mean word_perplexity, unweighted (1 task)** |" in table
    # a lower perplexity is a win
    (row,) = [r for r in c.pairs[0].rows if r.task == "t_ppl"]
    assert row.result == "loss" and row.diff == pytest.approx(3800.0 - 25.0)


def test_runs_with_another_limit_are_compared_on_their_shared_documents(tmp_path):
    """The issue's case: `--limit 4` against `--limit 8`: the 4 shared documents decide the task."""
    l4, l8 = real("limit4"), real("limit8")
    d4, d8 = samples(l4), samples(l8)
    assert (len(d4), len(d8)) == (4, 8)
    c = compare.compare([str(l4), str(l8)], out_dir=None, baseline=str(l8), settings=FAST)
    assert c.labels == ["hf(limit=4)@tiny-llama", "hf(limit=8)@tiny-llama"]
    (row,) = c.pairs[0].rows
    shared = sorted(d4)
    assert row.n_docs == 4 and row.design == "paired"
    assert row.mean_a == pytest.approx(np.mean([d4[i] for i in shared]))
    assert row.mean_b == pytest.approx(np.mean([d8[i] for i in shared]))
    assert row.diff == pytest.approx(np.mean([d4[i] - d8[i] for i in shared]))
    assert "compared on the 4 documents both scored (4 vs 8 logged)" in row.note
    assert c.pairs[0].interval.estimate == pytest.approx(row.diff)
    # without the samples there is nothing to pair: the task is not compared, and the summary says so
    bare = []
    for name, path in (("a", l4), ("b", l8)):
        (tmp_path / name).mkdir()
        bare.append(str(shutil.copy(path, tmp_path / name / path.name)))
    c = compare.compare(bare, out_dir=None, settings=FAST)
    (row,) = c.pairs[0].rows
    assert (row.result, row.diff, row.p_value) == ("n/a", None, None)
    assert "not compared: different documents (n 4 vs 8) and no --log_samples to pair them" in row.note
    p = c.pairs[0]
    assert (p.wins, p.ties, p.losses) == (0, 0, 0) and "1 task not compared (no shared documents): cmp_mc" in p.summary


def test_baseline_by_path_and_out_folder_refused_unless_overwrite(run_cli, tmp_path):
    l4, l8 = real("limit4"), real("limit8")
    out = tmp_path / "cmp"
    for baseline in (l8, l8.parent, REAL / "limit8"):  # the results file, or a folder holding only it
        rc, stdout, err = run_cli(l4, REAL / "limit8", "--baseline", baseline, "--out", out, "--overwrite")
        assert rc == 0, err
        assert "hf(limit=4)@tiny-llama vs hf(limit=8)@tiny-llama: wins on" in stdout
    # a path holding runs of two groups is ambiguous
    rc, _, err = run_cli(l4, l8, "--baseline", REAL, "--out", out, "--overwrite")
    assert rc == 2 and "holds runs of 2 groups" in err
    # the report folder exists now: refused in one line naming the flag, nothing touched
    (out / "adapter_usage_old_group.png").write_bytes(b"stale")
    before = (out / "report.md").read_text()
    rc, _, err = run_cli(l4, l8, "--out", out)
    assert rc == 2 and err.count("\n") == 1 and "--overwrite" in err and f"--out {out} is not empty" in err
    assert (out / "report.md").read_text() == before
    # --overwrite replaces the report and removes an earlier report's files
    rc, _, _ = run_cli(l4, l8, "--out", out, "--overwrite")
    assert rc == 0 and not (out / "adapter_usage_old_group.png").exists()
    # an unrelated file in the folder is left alone
    (out / "notes.txt").write_text("mine")
    assert run_cli(l4, l8, "--out", out, "--overwrite")[0] == 0 and (out / "notes.txt").read_text() == "mine"
    # the API keeps writing into its folder (the demo writes its report beside its runs)
    assert compare.compare([str(l4)], out_dir=out, settings=FAST, chart=False).out_dir == out
    with pytest.raises(IloraError, match="--overwrite"):
        compare.compare([str(l4)], out_dir=out, settings=FAST, chart=False, overwrite=False)
