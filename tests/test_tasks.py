"""Tests of the lm-eval task pack in tasks/ (bbh_ilora, unseen tasks, offline stock variants).

The BBH data is read from the `shared` folder beside the repository checkout
(`<checkout>/../shared/data/bbh`); tests that need it are skipped when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "tasks"
BBH_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbh"
BBH_JSON = BBH_ROOT / "tasks"

needs_bbh = pytest.mark.skipif(
    not BBH_JSON.is_dir(),
    reason=f"local BBH data not found at {BBH_ROOT} (expected the `shared` folder beside the repository checkout)",
)

OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def _load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The helpers exactly as lm-eval reaches them: the task YAMLs' utils.py, loaded by path.
UTILS = _load_by_path("_test_bbh_ilora_utils", TASKS_DIR / "bbh_ilora" / "utils.py")
import ilora_eval.tasks.common as COMMON  # noqa: E402 (what the utils shims re-export)
BBH_TASKS = list(COMMON.BBH_TASKS)


def _json_examples(task: str) -> list[dict]:
    return json.loads((BBH_JSON / f"{task}.json").read_text())["examples"]


@pytest.fixture(scope="module")
def bbh_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ILORA_BBH_DIR", str(BBH_JSON))
        for key, value in OFFLINE_ENV.items():
            mp.setenv(key, value)
        yield mp


@pytest.fixture(scope="module")
def loaded(bbh_env):
    """All task-pack tasks and groups, loaded once through lm-eval's TaskManager."""
    from lm_eval.tasks import TaskManager

    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)  # quiet lm-eval's per-task custom_dataset warning
    try:
        tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
        yield tm, tm.load(["bbh_ilora", "bbh_ilora_raw", "bbh_ilora_mixed", "bbh_ilora_mixed_raw"])
    finally:
        logger.setLevel(level)


def _indices(docs) -> list[int]:
    return [d["source_index"] for d in docs]


class OracleLM:
    """A stand-in model: records every request; answers correctly on a fixed subset of documents."""

    @staticmethod
    def correct(doc) -> bool:
        return doc["source_index"] % 3 == 0

    def __new__(cls):
        from lm_eval.api.model import LM

        class _Oracle(LM):
            def __init__(self):
                super().__init__()
                self.seen = []

            def generate_until(self, requests, disable_tqdm: bool = True):
                out = []
                for r in requests:
                    self.seen.append((r.task_name, r.doc, r.args[0]))
                    out.append(r.doc["target"] + "." if cls.correct(r.doc) else "zzz")
                return out

            def loglikelihood(self, requests, disable_tqdm: bool = True):
                return [(-1.0, False) for _ in requests]

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = True):
                return [-1.0 for _ in requests]

        return _Oracle()


def _evaluate(tm, tasks, **kwargs):
    from lm_eval import simple_evaluate

    lm = OracleLM()
    res = simple_evaluate(model=lm, tasks=tasks, task_manager=tm, bootstrap_iters=0,
                          log_samples=False, verbosity="ERROR", **kwargs)
    return lm, res["results"]


# ------------------------------------------------------------------------------------ metric
@pytest.mark.parametrize(
    "reference, prediction, expected",
    [
        ("false", "False.", 1.0),
        ("(A)", "(a)", 1.0),
        ("True", "  true \n", 1.0),
        ("Yes", "yes.", 1.0),
        ("valid", "Valid.", 1.0),
        ("] ] >", "] ] >.", 1.0),
        ("35", "3.5", 1.0),  # every period goes, also inside numbers (LoraHub's quirk)
        ("(A)", "(B)", 0.0),
        ("valid", "invalid", 0.0),
        ("false", "false. .", 0.0),  # strip() comes before the period removal: "false " != "false"
        ("no", "No, it is not", 0.0),
    ],
)
def test_exact_match_is_lorahubs_normaliser(reference, prediction, expected):
    def lorahub(s):
        return s.strip().lower().replace(".", "")

    assert UTILS.exact_match([reference], [prediction]) == expected
    assert expected == float(lorahub(reference) == lorahub(prediction))


def test_exact_match_averages_and_rejects_mismatched_lengths():
    assert UTILS.exact_match(["(A)", "(B)", "True", "7"], ["(a).", "(C)", "true", "7"]) == 0.75
    assert COMMON.lorahub_normalize(" False. . ") == "false "
    with pytest.raises(ValueError):
        UTILS.exact_match(["a", "b"], ["a"])


def test_flexible_extract_uses_the_stock_extraction_of_each_source_task():
    flt = UTILS.BBHFlexibleExtract()
    mc_input = "Options:\n(A) 12/11/1937\n(B) 12/25/1937\n(C) 01/04/1938"
    cases = [
        ({"source_task": "boolean_expressions", "input": "x"}, "So the answer is True.", "True"),
        ({"source_task": "sports_understanding", "input": "x"}, "It is plausible", "yes"),
        ({"source_task": "web_of_lies", "input": "x"}, "Thus Sherrie tells the truth", "yes"),
        ({"source_task": "multistep_arithmetic_two", "input": "x"}, "the result is -42 here", "-42"),
        ({"source_task": "formal_fallacies", "input": "x"}, "The argument is invalid", "invalid"),
        ({"source_task": "date_understanding", "input": mc_input}, "I pick (C) because", "(C)"),
        ({"source_task": "date_understanding", "input": mc_input}, "it is 12/25/1937", "(B)"),
        ({"source_task": "not_a_bbh_task", "input": "x"}, "left as it is", "left as it is"),
    ]
    out = flt.apply([[resp] for _, resp, _ in cases], [doc for doc, _, _ in cases])
    assert [o[0] for o in out] == [want for _, _, want in cases]


# ------------------------------------------------------------------------- loading / splits
@needs_bbh
def test_all_27_tasks_load_in_both_formats(loaded):
    _, d = loaded
    qa = {f"bbh_ilora_{t}" for t in BBH_TASKS}
    raw = {f"bbh_ilora_{t}_raw" for t in BBH_TASKS}
    assert len(BBH_TASKS) == 27 and qa | raw <= set(d["tasks"])
    assert {"bbh_ilora", "bbh_ilora_size_weighted", "bbh_ilora_raw", "bbh_ilora_raw_size_weighted"} <= set(d["groups"])
    for fmt_names in (qa, raw):
        for name in fmt_names:
            task = d["tasks"][name]
            bbh_task = task.config.dataset_kwargs["bbh_task"]
            n = len(_json_examples(bbh_task))
            test, adapt = list(task.eval_docs), list(task.fewshot_docs())
            assert (len(test), len(adapt)) == (n - 5, 5), name
            assert task.config.test_split == "test" and task.config.fewshot_split == "adapt"
            assert task.config.num_fewshot == 0 and task.OUTPUT_TYPE == "generate_until"
            assert set(test[0]) == {"input", "target", "source_task", "source_index"}
            assert "target" not in task.config.doc_to_text
            assert task.config.generation_kwargs["do_sample"] is False
    # prompts: qa = description + "Q: ...\nA:", raw = the bare input
    qa_task, raw_task = d["tasks"]["bbh_ilora_navigate"], d["tasks"]["bbh_ilora_navigate_raw"]
    doc = next(iter(qa_task.eval_docs))
    assert qa_task.fewshot_context(doc, 0) == (
        "Given a series of navigation instructions, determine whether one would end up back at the "
        "starting point.\n\nQ: " + doc["input"] + "\nA:"
    )
    assert raw_task.fewshot_context(doc, 0) == doc["input"]


@needs_bbh
def test_held_out_documents_are_fixed_disjoint_and_format_independent(loaded):
    _, d = loaded
    for t in BBH_TASKS:
        examples = _json_examples(t)
        qa, raw = d["tasks"][f"bbh_ilora_{t}"], d["tasks"][f"bbh_ilora_{t}_raw"]
        held = COMMON.adapt_indices(len(examples), 5, 42, key=t)
        assert _indices(qa.fewshot_docs()) == held == _indices(raw.fewshot_docs())
        assert _indices(qa.eval_docs) == [i for i in range(len(examples)) if i not in held]
        assert list(qa.eval_docs) == list(raw.eval_docs)
        for doc in qa.fewshot_docs():
            assert {k: doc[k] for k in ("input", "target")} == examples[doc["source_index"]]
    # Pinned draws: a change of the seeding (or of the data order) must be noticed.
    assert COMMON.adapt_indices(250, 5, 42, key="boolean_expressions") == PINNED_BOOLEAN_EXPRESSIONS
    assert COMMON.adapt_indices(146, 5, 42, key="penguins_in_a_table") == PINNED_PENGUINS


PINNED_BOOLEAN_EXPRESSIONS = [24, 32, 61, 71, 188]
PINNED_PENGUINS = [15, 46, 67, 90, 145]


def test_held_out_draw_does_not_depend_on_python_hash_seed():
    code = (
        "import importlib.util,sys;"
        f"s=importlib.util.spec_from_file_location('c', {str(TASKS_DIR / 'common.py')!r});"
        "m=importlib.util.module_from_spec(s);s.loader.exec_module(m);"
        "print([m.adapt_indices(250,5,42,key=t) for t in ('boolean_expressions','snarks')])"
    )
    outputs = set()
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                   text=True, check=True).stdout)
    assert len(outputs) == 1
    assert outputs.pop().startswith(f"[{PINNED_BOOLEAN_EXPRESSIONS}")


@needs_bbh
def test_held_out_documents_ignore_model_side_metadata(bbh_env, loaded):
    from lm_eval.tasks import TaskManager

    _, d = loaded
    # lm-eval hands --model_args and --metadata to custom_dataset as keyword arguments
    # (TaskManager(metadata=...)); plausible model-side names must change nothing. (`adapt_seed` is
    # the pack's own --metadata switch of the per-seed protocol: test_per_seed_protocol_*.)
    model_side = {"pretrained": "some/model", "strategy": "lorahub", "seed": 3, "n_adapt": 2,
                  "data_dir": "/nonexistent", "name": "x", "max_length": 64}
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=model_side)
    got = tm.load(["bbh_ilora_snarks", "bbh_ilora_mixed"])["tasks"]
    for name in ("bbh_ilora_snarks", "bbh_ilora_mixed"):
        assert list(got[name].fewshot_docs()) == list(d["tasks"][name].fewshot_docs())
        assert list(got[name].eval_docs) == list(d["tasks"][name].eval_docs)


@needs_bbh
def test_per_seed_protocol_redraws_adaptation_and_scored_documents_as_the_reference_does(bbh_env):
    """--metadata '{"adapt_seed": S}': the reference code's utils.shuffle_list after random.seed(S),
    the first 5 adapt and the rest are scored; the default draw stays the fixed held-out one."""
    from lm_eval.tasks import TaskManager

    draws = {}
    for seed in (1, 2):
        tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"adapt_seed": seed})
        task = tm.load(["bbh_ilora_navigate"])["tasks"]["bbh_ilora_navigate"]
        examples = _json_examples("navigate")
        random.seed(seed)  # the reference: seed_everything(seed); shuffle_list(inputs, outputs)
        pairs = list(zip([e["input"] for e in examples], [e["target"] for e in examples]))
        random.shuffle(pairs)
        adapt, scored = list(task.fewshot_docs()), list(task.eval_docs)
        assert [(d["input"], d["target"]) for d in adapt] == pairs[:5]
        assert [(d["input"], d["target"]) for d in scored] == pairs[5:]
        assert {d["adapt_seed"] for d in adapt + scored} == {seed}
        draws[seed] = _indices(adapt)
    assert draws[1] != draws[2]


@needs_bbh
def test_evaluation_scores_every_test_document_and_never_an_adaptation_one(loaded):
    tm, d = loaded
    names = ["bbh_ilora_penguins_in_a_table", "bbh_ilora_penguins_in_a_table_raw"]
    lm, results = _evaluate(tm, names)
    n = len(_json_examples("penguins_in_a_table"))
    held = set(COMMON.adapt_indices(n, 5, 42, key="penguins_in_a_table"))
    held_inputs = {doc["input"] for doc in d["tasks"][names[0]].fewshot_docs()}
    for name in names:
        seen = [doc for task_name, doc, _ in lm.seen if task_name == name]
        assert sorted(_indices(seen)) == sorted(set(range(n)) - held)
        assert not held_inputs & {doc["input"] for doc in seen}
        assert results[name]["sample_len"] == n - 5
        expected = sum(OracleLM.correct(doc) for doc in seen) / len(seen)
        assert results[name]["exact_match,strict-match"] == pytest.approx(expected)
        assert results[name]["exact_match,flexible-extract"] == pytest.approx(expected)
    raw_prompts = [prompt for task_name, doc, prompt in lm.seen if task_name == names[1]]
    assert raw_prompts == [doc["input"] for task_name, doc, _ in lm.seen if task_name == names[1]]


@needs_bbh
def test_group_reports_unweighted_and_size_weighted_means(loaded):
    tm, d = loaded
    names = [f"bbh_ilora_{t}" for t in BBH_TASKS]
    samples = {name: list(range(1 + (7 * i) % 9)) for i, name in enumerate(names)}  # unequal sizes
    lm, results = _evaluate(tm, ["bbh_ilora"], samples=samples)
    assert {task for task, _, _ in lm.seen} == set(names)
    accs, sizes = [], []
    for name in names:
        docs = [doc for task, doc, _ in lm.seen if task == name]
        assert len(docs) == len(samples[name]) == results[name]["sample_len"]
        accs.append(sum(OracleLM.correct(doc) for doc in docs) / len(docs))
        sizes.append(len(docs))
        assert results[name]["exact_match,strict-match"] == pytest.approx(accs[-1])
    unweighted = sum(accs) / len(accs)
    weighted = sum(a * s for a, s in zip(accs, sizes)) / sum(sizes)
    assert abs(unweighted - weighted) > 0.01  # the check below can tell the two apart
    assert results["bbh_ilora"]["exact_match,strict-match"] == pytest.approx(unweighted)
    assert results["bbh_ilora_size_weighted"]["exact_match,strict-match"] == pytest.approx(weighted)
    flex = [results[name]["exact_match,flexible-extract"] for name in names]
    assert results["bbh_ilora"]["exact_match,flexible-extract"] == pytest.approx(sum(flex) / len(flex))
    assert results["bbh_ilora_size_weighted"]["exact_match,flexible-extract"] == pytest.approx(
        sum(f * s for f, s in zip(flex, sizes)) / sum(sizes))


# ------------------------------------------------------------------------------ mixed task
@needs_bbh
def test_mixed_task_interleaves_every_listed_source_task(loaded):
    _, d = loaded
    qa, raw = d["tasks"]["bbh_ilora_mixed"], d["tasks"]["bbh_ilora_mixed_raw"]
    sources = list(qa.config.dataset_kwargs["source_tasks"])
    assert sources == list(COMMON.MIXED_SOURCE_TASKS) and len(sources) == 6
    test, adapt = list(qa.eval_docs), list(qa.fewshot_docs())
    assert list(raw.fewshot_docs()) == adapt and list(raw.eval_docs) == test
    # every source task present, every example used exactly once across the two splits
    for t in sources:
        got = sorted(doc["source_index"] for doc in test + adapt if doc["source_task"] == t)
        assert got == list(range(len(_json_examples(t)))), t
    assert {doc["source_task"] for doc in test} == set(sources)
    # one adaptation set of 5, drawn across the sources (5 different tasks), never scored
    assert len(adapt) == 5 and len({doc["source_task"] for doc in adapt}) == 5
    keys = {(doc["source_task"], doc["source_index"]) for doc in adapt}
    assert not keys & {(doc["source_task"], doc["source_index"]) for doc in test}
    # interleaved: any 12 consecutive documents come from all six tasks
    assert all(len({doc["source_task"] for doc in test[i:i + 12]}) == 6 for i in range(0, 200, 12))
    # prompts: qa carries the source task's description, raw is the bare input
    doc = next(doc for doc in test if doc["source_task"] == "word_sorting")
    assert qa.fewshot_context(doc, 0) == "Sort a list of words.\n\nQ: " + doc["input"] + "\nA:"
    assert raw.fewshot_context(doc, 0) == doc["input"]


@needs_bbh
def test_mixed_task_evaluates_each_document_with_its_source_extraction(loaded):
    tm, _ = loaded
    lm, results = _evaluate(tm, ["bbh_ilora_mixed"], samples={"bbh_ilora_mixed": list(range(30))})
    seen = [doc for _, doc, _ in lm.seen]
    assert len(seen) == 30 and len({doc["source_task"] for doc in seen}) == 6
    expected = sum(OracleLM.correct(doc) for doc in seen) / 30
    assert results["bbh_ilora_mixed"]["exact_match,strict-match"] == pytest.approx(expected)


# --------------------------------------------------------------------------- offline switch
@needs_bbh
def test_offline_switch_reads_the_named_folder(tmp_path, monkeypatch):
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    # The data set's root works as well as its tasks/ folder.
    monkeypatch.setenv("ILORA_BBH_DIR", str(BBH_ROOT))
    ds = UTILS.load_bbh("snarks")
    examples = _json_examples("snarks")
    assert len(ds["test"]) + len(ds["adapt"]) == len(examples)
    assert [{"input": r["input"], "target": r["target"]} for r in ds["test"]][:3] == [
        examples[i] for i in range(len(examples)) if i not in COMMON.adapt_indices(len(examples), 5, 42, "snarks")
    ][:3]

    # A folder of our own is read instead (through lm-eval's TaskManager).
    fake = [{"input": f"question {i}", "target": "True" if i % 2 else "False"} for i in range(9)]
    (tmp_path / "boolean_expressions.json").write_text(json.dumps({"canary": "x", "examples": fake}))
    monkeypatch.setenv("ILORA_BBH_DIR", str(tmp_path))
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    task = tm.load(["bbh_ilora_boolean_expressions_raw"])["tasks"]["bbh_ilora_boolean_expressions_raw"]
    assert len(task.eval_docs) == 4 and len(task.fewshot_docs()) == 5
    assert {doc["input"] for doc in list(task.eval_docs) + list(task.fewshot_docs())} == {f["input"] for f in fake}

    # A missing file gives an error naming the folder.
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        tm.load(["bbh_ilora_snarks"])
    monkeypatch.setenv("ILORA_BBH_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        UTILS.load_bbh("snarks")


# ----------------------------------------------------------------------- stock BBH groups
STOCK = {  # offline group: (stock group folder under lm_eval/tasks, number of subtasks)
    "bbh_zeroshot_offline": ("bbh/zeroshot", 27),
    "bbh_fewshot_offline": ("bbh/fewshot", 27),
    "bbh_cot_fewshot_offline": ("bbh/cot_fewshot", 27),
    "bbh_cot_zeroshot_offline": ("bbh/cot_zeroshot", 27),
    "leaderboard_bbh_offline": ("leaderboard/bbh_mc", 24),
}


@pytest.fixture(scope="module")
def stock_offline_dir(tmp_path_factory):
    if not BBH_JSON.is_dir():
        pytest.skip(f"local BBH data not found at {BBH_ROOT}")
    stock_offline = _load_by_path("_test_stock_offline", TASKS_DIR / "stock_offline.py")
    out = tmp_path_factory.mktemp("stock_offline")
    written = stock_offline.generate(out, BBH_ROOT)
    return out, written


@needs_bbh
def test_stock_offline_variants_override_only_the_data_source(stock_offline_dir):
    import yaml
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml
    import lm_eval.tasks

    out, written = stock_offline_dir
    stock_root = Path(lm_eval.tasks.__file__).resolve().parent
    assert {g: len(v) for g, v in written.items()} == {g: n for g, (_, n) in STOCK.items()}
    for group, (folder, _) in STOCK.items():
        for path in (out / group).glob("[!_]*.yaml"):
            raw = yaml.safe_load(path.read_text())
            assert set(raw) == {"include", "task", "dataset_path", "dataset_name", "dataset_kwargs"}
            assert Path(raw["include"]).parent == stock_root / folder
            assert raw["dataset_kwargs"] == {"data_files": {"test": str(BBH_JSON / f"{path.stem}.json")},
                                             "field": "examples"}

    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE_ENV.items():
            mp.setenv(key, value)
        tm = TaskManager(include_path=str(out), include_defaults=False)
        assert set(STOCK) <= set(tm.all_groups)
        picks = ["bbh_zeroshot_offline_navigate", "bbh_fewshot_offline_navigate",
                 "bbh_cot_fewshot_offline_navigate", "leaderboard_bbh_offline_navigate"]
        tasks = tm.load(picks)["tasks"]
    examples = _json_examples("navigate")
    for name in picks:
        task = tasks[name]
        stock_path = stock_root / STOCK[name.rsplit("_navigate", 1)[0]][0] / "navigate.yaml"
        stock = load_yaml(stock_path, resolve_func=False)
        for key in ("doc_to_text", "description", "output_type", "num_fewshot", "generation_kwargs"):
            if key in stock:
                assert getattr(task.config, key) == stock[key], (name, key)
        assert [{"input": x["input"], "target": x["target"]} for x in task.eval_docs] == examples
        # the adaptation examples of a few-shot stock group: its inline few-shot samples
        if name != "bbh_zeroshot_offline_navigate":
            samples = stock["fewshot_config"]["samples"]
            assert [s["input"] for s in task.fewshot_docs()] == [s["input"] for s in samples] and len(samples) == 3
    assert tasks["leaderboard_bbh_offline_navigate"].OUTPUT_TYPE == "multiple_choice"
    assert len(list(tasks["leaderboard_bbh_offline_navigate"].fewshot_docs())) == 3


@needs_bbh
def test_qa_prompt_equals_lm_evals_zeroshot_prompt(loaded, stock_offline_dir):
    from lm_eval.tasks import TaskManager

    out, _ = stock_offline_dir
    _, d = loaded
    tm = TaskManager(include_path=str(out), include_defaults=False)
    for t in ("snarks", "dyck_languages"):
        stock = tm.load([f"bbh_zeroshot_offline_{t}"])["tasks"][f"bbh_zeroshot_offline_{t}"]
        ours = d["tasks"][f"bbh_ilora_{t}"]
        docs = list(stock.eval_docs)
        for doc in list(ours.eval_docs)[:5]:
            stock_doc = docs[doc["source_index"]]
            assert stock_doc["input"] == doc["input"]
            assert ours.fewshot_context(doc, 0) == stock.fewshot_context(stock_doc, 0)


# --------------------------------------------------------------------- generated configs
def test_committed_task_yamls_match_their_generator(capsys):
    gen = _load_by_path("_test_generate_configs", TASKS_DIR / "bbh_ilora" / "_generate_configs.py")
    assert gen.main(["--check"]) == 0, capsys.readouterr().out
    assert len(list((TASKS_DIR / "bbh_ilora" / "qa").glob("*.yaml"))) == 27
    assert len(list((TASKS_DIR / "bbh_ilora" / "raw").glob("*.yaml"))) == 27


def test_unseen_template_becomes_a_working_task(tmp_path, monkeypatch):
    pytest.importorskip("ilora_eval.tasks.unseen.utils", reason="needs the installed ilora-eval package")
    from lm_eval.tasks import TaskManager

    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1), "extra": i} for i in range(12)]
    data = tmp_path / "my_task.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    template = (TASKS_DIR / "unseen" / "_unseen_task_template.yaml.txt").read_text().splitlines()
    body = [line[2:] for line in template if line.startswith("# ")]  # "##" lines are prose
    text = "\n".join(body).replace("!function utils.", "!function ilora_eval.tasks.unseen.utils.")
    text = text.replace("/data/my_task.jsonl", str(data))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_unseen_task.yaml").write_text(text)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    task = tm.load(["my_unseen_task"])["tasks"]["my_unseen_task"]
    test, adapt = list(task.eval_docs), list(task.fewshot_docs())
    assert (len(test), len(adapt)) == (7, 5)
    assert _indices(adapt) == COMMON.adapt_indices(12, 5, 42, key="my_unseen_task")
    doc = test[0]
    assert doc["input"] == rows[doc["source_index"]]["question"] and doc["target"] == rows[doc["source_index"]]["answer"]
    assert task.fewshot_context(doc, 0) == doc["input"]
    assert task.process_results(doc, [doc["target"] + "."])["exact_match"] == 1.0
    # settings only count inside `unseen`; loose keywords (model arguments) are ignored
    settings = {"task": "my_unseen_task", "data_files": str(data), "input_field": "question", "target_field": "answer"}
    ds = UTILS.load_unseen(unseen=settings, n_adapt=1, seed=9, input_field="extra", version=1.0)
    assert [r["source_index"] for r in ds["adapt"]] == _indices(adapt)
    with pytest.raises(ValueError, match="data_file"):
        UTILS.load_unseen(unseen={"task": "t", "data_file": str(data)})


# ------------------------------------------------------------------- end to end (lm_eval CLI)
def _tiny_llama(path: Path) -> None:
    """A random 2-layer Llama with a small BPE tokenizer trained on BBH text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [ex["input"] + " " + ex["target"] for t in BBH_TASKS for ex in _json_examples(t)[:4]]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)


@pytest.mark.slow
@needs_bbh
def test_lm_eval_cli_runs_the_pack_and_a_stock_offline_task(tmp_path, stock_offline_dir):
    pytest.importorskip("tokenizers")
    model_dir = tmp_path / "tiny"
    out_dir, _ = stock_offline_dir
    stock_yaml = out_dir / "leaderboard_bbh_offline" / "navigate.yaml"
    args = ["run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32,max_length=4096",
            "--tasks", f"bbh_ilora,bbh_ilora_mixed_raw,{stock_yaml}", "--include_path", str(TASKS_DIR),
            "--limit", "2", "--gen_kwargs", "max_gen_toks=3", "--batch_size", "8", "--device", "cpu",
            "--output_path", str(tmp_path / "out"), "--log_samples"]
    # One interpreter builds the tiny model and runs the stock CLI (saves a second torch import).
    script = tmp_path / "run_cli.py"
    script.write_text(
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        f"spec = importlib.util.spec_from_file_location('_tt', {str(Path(__file__).resolve())!r})\n"
        "tt = importlib.util.module_from_spec(spec); spec.loader.exec_module(tt)\n"
        f"tt._tiny_llama(Path({str(model_dir)!r}))\n"
        f"sys.argv = ['lm_eval'] + {args!r}\n"
        "from lm_eval.__main__ import cli_evaluate\n"
        "cli_evaluate()\n"
    )
    env = dict(os.environ, ILORA_BBH_DIR=str(BBH_JSON), TOKENIZERS_PARALLELISM="false", **OFFLINE_ENV)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results_file = next((tmp_path / "out").rglob("results_*.json"))
    res = json.loads(results_file.read_text())["results"]
    for name in ("bbh_ilora", "bbh_ilora_size_weighted"):
        assert set(res[name]) >= {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert res["bbh_ilora_boolean_expressions"]["sample_len"] == 2
    assert res["bbh_ilora_mixed_raw"]["sample_len"] == 2
    assert "acc_norm,none" in res["leaderboard_bbh_offline_navigate"]
    # the logged documents are test documents, never the held-out ones
    samples_file = next((tmp_path / "out").rglob("samples_bbh_ilora_navigate_*.jsonl"))
    logged = [json.loads(line)["doc"]["source_index"] for line in samples_file.read_text().splitlines()]
    held = COMMON.adapt_indices(len(_json_examples("navigate")), 5, 42, key="navigate")
    first_two_test = [i for i in range(len(_json_examples("navigate"))) if i not in held][:2]
    assert sorted(set(logged)) == first_two_test  # one line per document and filter
