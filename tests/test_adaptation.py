"""Adaptation examples on lm-eval tasks of every shape: never a scored document, built like the
scored prompts, seeded by lm-eval's --seed, recorded in the results."""

import json
import random
import shutil
import subprocess
import sys

import pytest

import tiny
from ilora_eval.errors import IloraError

ROWS = [{"input": f"{tiny.WORDS[i]} {tiny.WORDS[i + 2]} question", "target": "yes" if i % 2 else "no"}
        for i in range(8)]
GEN = ['output_type: generate_until', 'doc_to_text: "Q: {{input}}\\nA:"', 'doc_to_target: "{{target}}"',
       'generation_kwargs:', '  until: ["\\n"]', '  max_gen_toks: 3', 'metric_list:', '  - metric: exact_match']


def write(dir_, name, splits: dict, keys: list[str], extra=GEN):
    """A local JSON task; `splits` maps split names to data files (a missing file gets documents of
    its own), `keys` are the split keys."""
    dir_.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, file_ in splits.items():
        path = dir_ / file_
        if not path.exists():
            own = [dict(r, input=f"{path.stem} {r['input']}") for r in ROWS]
            path.write_text("".join(json.dumps(r) + "\n" for r in own))
        files[split] = path
    lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:"]
    lines += [f"    {split}: {path}" for split, path in files.items()]
    lines += keys + extra
    (dir_ / f"{name}.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    d = tmp_path_factory.mktemp("shapes")
    # like truthfulqa_mc1: a validation split only, which lm-eval scores
    write(d, "shape_validation_only", {"validation": "val.jsonl"}, ["validation_split: validation"])
    # like leaderboard_gpqa: test_split null, validation_split = training_split = train (train is scored)
    write(d, "shape_train_scored", {"train": "train.jsonl"},
          ["test_split: null", "validation_split: train", "training_split: train"])
    # a fewshot split that reads the scored file under another name
    write(d, "shape_same_files", {"test": "same.jsonl", "heldout": "same.jsonl"},
          ["test_split: test", "fewshot_split: heldout"])
    # proper held-out material
    write(d, "shape_fewshot_ok", {"test": "ok_test.jsonl", "adapt": "ok_adapt.jsonl"},
          ["test_split: test", "fewshot_split: adapt"])
    write(d, "shape_train_ok", {"train": "tr_train.jsonl", "test": "tr_test.jsonl"},
          ["test_split: test", "training_split: train"])
    return d, TaskManager(include_path=str(d))


def ilora(base, lib, **kw):
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    kw.setdefault("embedder", "hashing")
    kw.setdefault("batch_size", 4)
    return IloraLM(pretrained=str(base), library=str(lib), device="cpu", progress=False, fit_cache="false", **kw)


def evaluate(lm, tm, tasks, **kw):
    from lm_eval import simple_evaluate

    return simple_evaluate(model=lm, tasks=tasks, task_manager=tm, limit=3, **kw)


@pytest.mark.parametrize("task, split, why", [
    ("shape_validation_only", "validation", "its validation_split 'validation' is the scored split"),
    ("shape_train_scored", "train", "its training_split 'train' is the scored split"),
    ("shape_same_files", "test", "its fewshot_split 'heldout' reads the same data files as the scored split"),
])
def test_stock_shapes_that_would_adapt_on_scored_documents_are_refused(task, split, why, llama, shapes):
    base, lib = llama
    with pytest.raises(IloraError) as err:
        evaluate(ilora(base, lib, strategy="ilora", top_k=2, budget=2), shapes[1], [task])
    msg = str(err.value)
    assert "\n" not in msg
    assert f"task {task}" in msg and f"{split!r}" in msg and why in msg
    assert "fewshot_split or fewshot_config.samples" in msg and "tasks-path" in msg


def test_a_refusal_under_the_stock_cli_is_one_line(llama, shapes):
    base, lib = llama
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "ilora", "--model_args",
         f"pretrained={base},library={lib},strategy=lorahub,n_modules=2,embedder=hashing,fit_cache=false",
         "--include_path", str(shapes[0]), "--tasks", "shape_train_scored", "--device", "cpu", "--limit", "2"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ilora-eval: error:")]
    assert len(lines) == 1 and "task shape_train_scored" in lines[0] and "'train'" in lines[0]


@pytest.mark.parametrize("task, source", [("shape_fewshot_ok", "fewshot_split:adapt"),
                                          ("shape_train_ok", "training_split:train")])
def test_held_out_sources_are_accepted_and_recorded(task, source, llama, shapes):
    base, lib = llama
    res = evaluate(ilora(base, lib, strategy="ilora", top_k=2, budget=2, n_adapt=3, seed=3), shapes[1], [task])
    rec = res["config"]["ilora_tasks"][task]
    assert rec["adaptation_source"] == source
    assert rec["adaptation_split"] == source.split(":")[1]
    assert rec["scored_split"] == "test"
    assert rec["n_adaptation_examples"] == 3
    assert rec["adaptation_doc_ids"] == random.Random(3).sample(range(len(ROWS)), 3)
    assert len(rec["learned"]["examples"]) == 3


def test_base_and_training_free_strategies_need_no_adaptation_source(llama, shapes):
    base, lib = llama
    res = evaluate(ilora(base, lib, strategy="retrieve_fuse", top_k=2), shapes[1], ["shape_validation_only"])
    assert res["config"]["ilora_tasks"]["shape_validation_only"]["adaptation_source"] == "none"


CHAT = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:{% endif %}")


def test_adaptation_prompts_are_the_prompts_lm_eval_builds(llama, tmp_path):
    """Under --apply_chat_template, --system_instruction and one few-shot example, an adaptation
    example's tokens equal those lm-eval builds when the same document is scored."""
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    base, lib = llama
    chat_base = tmp_path / base.name
    shutil.copytree(base, chat_base)
    tok = AutoTokenizer.from_pretrained(chat_base)
    tok.chat_template = CHAT
    tok.save_pretrained(chat_base)
    d = tmp_path / "tasks"
    fewshot = ["fewshot_config:", "  sampler: first_n", "num_fewshot: 1"]
    # adapt_side adapts on adapt.jsonl; scored_side scores those very documents (in a second run)
    d.mkdir()
    (d / "adapt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    write(d, "adapt_side", {"test": "other.jsonl", "adapt": "adapt.jsonl"},
          ["test_split: test", "fewshot_split: adapt", *fewshot])
    # scored from its own few-shot pool: lm-eval keeps each scored document out of its own examples
    write(d, "scored_side", {"adapt": "adapt.jsonl"}, ["test_split: adapt", "fewshot_split: adapt", *fewshot])
    from lm_eval import simple_evaluate

    tm = TaskManager(include_path=str(d))
    settings = {"apply_chat_template": True, "system_instruction": "Answer briefly.", "log_samples": True}
    lm = ilora(chat_base, lib, strategy="ilora", top_k=2, budget=2, n_adapt=8, seed=1)
    simple_evaluate(model=lm, tasks=["adapt_side"], task_manager=tm, limit=1, **settings)
    res = simple_evaluate(model=ilora(chat_base, lib, strategy="base"), tasks=["scored_side"], task_manager=tm,
                          **settings)
    scored = {s["doc"]["input"]: s["arguments"][0][0] for s in res["samples"]["scored_side"]}
    examples = lm.router.tasks["adapt_side"].examples
    assert len(examples) == len(scored) == len(ROWS)
    for ex in examples:
        built = scored[ex.text[len("Q: "):-len("\nA:")]]
        if built.count(ex.text) == 2:  # lm-eval < 0.4.13: first_n puts a scored document among its own
            assert ex.prompt.count(ex.text) == 1  # examples; ilora's adaptation example still never sees it
            continue
        assert "Answer briefly." in built and "<s>assistant:" in built
        assert built.count(ex.text) == 1  # its own answer is not among its few-shot examples
        assert lm.tok_encode(ex.prompt) == lm.tok_encode(built)
        assert not ex.target.startswith(" ")  # a chat template drops lm-eval's target delimiter too
        assert ex.stop == "\n"  # the task's first `until`: what ends a generated answer


def test_lm_eval_seed_is_the_strategies_seed(llama, shapes):
    base, lib = llama
    draws = {}
    for seed, extra in ((None, {}), (7, {}), (7, {"seed": 2})):
        kw = {} if seed is None else {"random_seed": seed}
        res = evaluate(ilora(base, lib, strategy="lorahub", n_modules=3, budget=2, **extra), shapes[1],
                       ["shape_fewshot_ok"], **kw)
        learned = res["config"]["ilora_tasks"]["shape_fewshot_ok"]["learned"]
        draws[(seed, tuple(extra.items()))] = (learned["adapters"], res["config"]["ilora_seed"])
    default, seven, given = draws.values()
    assert default[1] == {"value": 0, "source": "lm_eval --seed"}  # lm-eval's own default --seed is 0
    assert seven[1] == {"value": 7, "source": "lm_eval --seed"}
    assert given[1] == {"value": 2, "source": "model_args seed="}
    ids = sorted(p.name for p in lib.iterdir() if (p / "adapter_config.json").is_file())
    for (adapters, rec) in draws.values():
        assert adapters == [ids[i] for i in random.Random(rec["value"]).sample(range(len(ids)), 3)]
    assert default[0] != seven[0]


def test_a_run_answered_from_lm_evals_cache_still_records_what_produced_it(llama, shapes, tmp_path):
    base, lib = llama
    cache = str(tmp_path / "reqs")
    first = evaluate(ilora(base, lib, strategy="ilora", top_k=2, budget=2, seed=1), shapes[1], ["shape_fewshot_ok"],
                     use_cache=cache)
    lm = ilora(base, lib, strategy="ilora", top_k=2, budget=2, seed=1)
    calls = []
    lm.generate_until = lambda reqs, **kw: calls.append(len(reqs)) or ["" for _ in reqs]
    second = evaluate(lm, shapes[1], ["shape_fewshot_ok"], use_cache=cache)
    assert calls in ([], [0])  # every request came from the cache
    a = first["config"]["ilora_tasks"]["shape_fewshot_ok"]
    b = second["config"]["ilora_tasks"]["shape_fewshot_ok"]
    assert b["learned"] == a["learned"] and b["adaptation_doc_ids"] == a["adaptation_doc_ids"]
    assert b["docs_per_example"] == a["docs_per_example"] and sum(b["docs_per_example"].values()) == 3


def test_lm_evals_cache_is_not_shared_across_seeds(llama, shapes, tmp_path):
    base, lib = llama
    cache = str(tmp_path / "reqs")
    evaluate(ilora(base, lib, strategy="lorahub", n_modules=3, budget=2), shapes[1], ["shape_fewshot_ok"], use_cache=cache)
    with pytest.raises(IloraError, match="another ilora configuration"):  # --seed 5 draws other modules
        evaluate(ilora(base, lib, strategy="lorahub", n_modules=3, budget=2), shapes[1], ["shape_fewshot_ok"],
                 use_cache=cache, random_seed=5)

