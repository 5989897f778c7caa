"""Requests HFLM cuts to max_length are counted per task, recorded in the results config and
warned about once (issue #16.12). A tiny T5 with a small max_length stands for flan-t5's 512."""

import json

import pytest

import tiny

LIMIT = 9
N_DOCS = 8


@pytest.fixture(scope="module")
def long_tasks(tmp_path_factory):
    """Inputs of 1..N_DOCS words, so some contexts fit in LIMIT tokens and some do not."""
    from lm_eval.tasks import TaskManager

    d = tmp_path_factory.mktemp("long_tasks")
    docs = {}
    for name, kind in (("long_gen", "generate_until"), ("long_mc", "multiple_choice")):
        tiny.write_task(d, name, kind, n_docs=N_DOCS)
        rows = [{"input": " ".join(tiny.WORDS[i:2 * i + 1]), "target": "yes" if i % 2 else "no"} for i in range(N_DOCS)]
        (d / f"{name}_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        docs[name] = rows
    return TaskManager(include_path=str(d)), docs


def evaluate(lm, manager):
    from lm_eval import simple_evaluate

    return simple_evaluate(model=lm, tasks=["long_gen", "long_mc"], task_manager=manager, log_samples=True)


def responses(res):
    return {(t, s["doc_id"]): s["resps"] for t, samples in res["samples"].items() for s in samples}


def test_truncated_requests_are_counted_recorded_and_warned_once(t5, long_tasks, capsys):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    base, lib = t5
    manager, docs = long_tasks
    capsys.readouterr()
    ours = evaluate(IloraLM(pretrained=str(base), library=str(lib), strategy="base", device="cpu", batch_size=4,
                            progress=False, max_length=LIMIT), manager)
    err = capsys.readouterr().err
    assert err.count("ilora-eval: warning:") == 1 and "max_length" in err, err

    # independent count: T5's context (with its </s>) over LIMIT tokens is cut, for a choice's
    # loglikelihood and for a generation prompt alike; a multiple-choice document is 2 requests
    tok = AutoTokenizer.from_pretrained(str(base))
    over = [len(tok(f"Q: {r['input']}\nA:").input_ids) > LIMIT for r in docs["long_gen"]]
    assert 0 < sum(over) < N_DOCS  # the fixture has both kinds
    recorded = ours["config"]["ilora_truncation"]
    assert recorded == {"max_length": LIMIT, "tasks": {
        "long_gen": {"requests": N_DOCS, "truncated": sum(over)},
        "long_mc": {"requests": 2 * N_DOCS, "truncated": 2 * sum(over)}}}

    # the cuts are HFLM's own: the same answers as --model hf with the same max_length
    ref = evaluate(HFLM(pretrained=str(base), device="cpu", batch_size=4, max_length=LIMIT), manager)
    a, b = responses(ours), responses(ref)
    assert a.keys() == b.keys()
    for key in a:
        for x, y in zip(a[key], b[key]):
            x, y = x[0], y[0]
            if isinstance(x, (list, tuple)):
                assert x[0] == pytest.approx(y[0], abs=1e-4), key
            else:
                assert x == y, key


def test_nothing_cut_records_zeros_and_says_nothing(t5, long_tasks, capsys):
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    base, lib = t5
    manager, _ = long_tasks
    capsys.readouterr()
    res = evaluate(IloraLM(pretrained=str(base), library=str(lib), strategy="base", device="cpu", batch_size=4,
                           progress=False, max_length=512), manager)
    assert "ilora-eval: warning:" not in capsys.readouterr().err
    tasks = res["config"]["ilora_truncation"]["tasks"]
    assert tasks == {"long_gen": {"requests": N_DOCS, "truncated": 0}, "long_mc": {"requests": 2 * N_DOCS, "truncated": 0}}
