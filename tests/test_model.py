"""The `ilora` lm-eval model in-process: equivalences with `hf`, invariance, recorded config."""

import json
import random

import pytest
import torch

import tiny
from ilora_eval.errors import IloraError

TASKS = ["toy_gen", "toy_mc"]


@pytest.fixture(scope="session")
def task_manager(tiny_root):
    from lm_eval.tasks import TaskManager

    d = tiny_root / "tasks"
    tiny.write_task(d, "toy_gen")
    tiny.write_task(d, "toy_mc", "multiple_choice")
    return TaskManager(include_path=str(d))


def run(lm, task_manager, tasks=TASKS):
    from lm_eval import simple_evaluate

    res = simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager, log_samples=True)
    per_doc = {}
    for task, samples in res["samples"].items():
        for s in samples:
            per_doc[(task, s["doc_id"])] = s["resps"]
    return res, per_doc


def ilora(base, lib, **kw):
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    kw.setdefault("embedder", "hashing")
    kw.setdefault("batch_size", 4)
    return IloraLM(pretrained=str(base), library=str(lib) if lib else None, device="cpu", progress=False, **kw)


def hf(base, **kw):
    from lm_eval.models.huggingface import HFLM

    kw.setdefault("batch_size", 4)
    return HFLM(pretrained=str(base), device="cpu", **kw)


def close(a, b):
    """Per-doc responses equal: floats within 1e-4, generations exactly."""
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k]):
            x, y = x[0], y[0]
            if isinstance(x, (list, tuple)):
                assert x[0] == pytest.approx(y[0], abs=1e-4), k
            else:
                assert x == y, k


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_base_strategy_equals_hf(kind, request, task_manager):
    base, lib = request.getfixturevalue(kind)
    _, ours = run(ilora(base, lib, strategy="base"), task_manager)
    _, ref = run(hf(base), task_manager)
    close(ours, ref)


def test_one_adapter_library_equals_hf_with_peft(llama, tiny_root, task_manager):
    base, lib = llama
    one = tiny_root / "one_lib"
    if not one.exists():
        one.mkdir()
        (one / "only").symlink_to(lib / "02_animals", target_is_directory=True)
    _, ours = run(ilora(base, one, strategy="single_best"), task_manager)
    _, ref = run(hf(base, peft=str(lib / "02_animals")), task_manager)
    _, plain = run(hf(base), task_manager)
    close(ours, ref)
    with pytest.raises(AssertionError):
        close(ours, plain)  # the adapter really changed something


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_invariant_to_batch_size_order_and_logits_cache(kind, request, task_manager, tiny_root):
    base, lib = request.getfixturevalue(kind)
    log = tiny_root / f"inv_{kind}.jsonl"
    _, ref = run(ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=1, routing_log=str(log)), task_manager)
    # different compositions per document, so batches are genuinely mixed
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({(tuple(r["adapters"]), tuple(r["weights"])) for r in rows}) >= 3
    for bs in (3, 8):
        close(run(ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=bs), task_manager)[1], ref)
    close(run(ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=3, logits_cache=False), task_manager)[1], ref)


def test_shuffled_requests_give_the_same_answers(llama):
    from lm_eval.api.instance import Instance

    base, lib = llama
    reqs = []
    for doc_id in range(6):
        doc = {"input": f"{tiny.WORDS[doc_id]} {tiny.WORDS[doc_id + 4]}"}
        for choice in (" yes", " no", " red"):
            reqs.append(Instance("loglikelihood", doc, (f"Q: {doc['input']}\nA:", choice), len(reqs),
                                 ("toy_direct", doc_id, 1)))
    lm = ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=4)
    forward = lm.loglikelihood(reqs)
    order = list(range(len(reqs)))
    random.Random(0).shuffle(order)
    shuffled = ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=4).loglikelihood([reqs[i] for i in order])
    for pos, i in enumerate(order):
        assert shuffled[pos][0] == pytest.approx(forward[i][0], abs=1e-5)
    assert len({round(f[0], 4) for f in forward}) > 6  # not a constant answer


def test_learned_strategies_record_config_and_are_deterministic(t5, task_manager):
    base, lib = t5
    res1, out1 = run(ilora(base, lib, strategy="ilora", top_k=3, budget=6, fit_cache="false"), task_manager)
    res2, out2 = run(ilora(base, lib, strategy="ilora", top_k=3, budget=6, fit_cache="false"), task_manager)
    close(out1, out2)
    cfg = res1["config"]
    assert cfg["ilora_strategy"] == "ilora" and cfg["ilora_args"]["top_k"] == 3
    assert cfg["ilora_library_hash"] == res2["config"]["ilora_library_hash"] and len(cfg["ilora_library_hash"]) == 16
    gen = cfg["ilora_tasks"]["toy_gen"]
    assert gen["adaptation_source"] == "fewshot_split:adapt" and gen["n_adaptation_examples"] == 5
    assert len(gen["learned"]["examples"]) == 5
    assert all(len(e["adapters"]) == 3 for e in gen["learned"]["examples"])
    assert sum(gen["docs_per_example"].values()) == 6
    assert any(w != 0 for e in gen["learned"]["examples"] for w in e["weights"])


def test_routing_log_lists_each_document(llama, tiny_root, task_manager):
    base, lib = llama
    path = tiny_root / "routing.jsonl"
    run(ilora(base, lib, strategy="lorahub", n_modules=3, budget=4, routing_log=str(path)), task_manager)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {(r["task"], r["doc_id"]) for r in rows} == {(t, i) for t in TASKS for i in range(6)}
    assert all(len(r["adapters"]) == len(r["weights"]) <= 3 for r in rows)


def test_model_argument_errors(llama):
    base, lib = llama
    with pytest.raises(IloraError, match="unknown model argument"):
        ilora(base, lib, strategy="base", colour="red")
    with pytest.raises(IloraError, match="top_k is not an argument of strategy=lorahub"):
        ilora(base, lib, strategy="lorahub", top_k=3)
    with pytest.raises(IloraError, match="needs library="):
        ilora(base, None, strategy="ilora")


def test_gpt2_conv1d_targets_match_peft(gpt2, task_manager):
    base, lib = gpt2
    _, ours = run(ilora(base, lib, strategy="uniform", top_k=1, exclude="0[1-5]_.*"), task_manager, ["toy_mc"])
    _, ref = run(hf(base, peft=str(lib / "00_colors")), task_manager, ["toy_mc"])
    close(ours, ref)
    assert torch.__version__  # torch imported for the model


def test_fit_cache_resumes_and_recomputes_on_change(llama, tmp_path, task_manager, caplog):
    base, lib = llama
    cache = tmp_path / "fits"
    kw = dict(strategy="lorahub", n_modules=3, budget=5, fit_cache=str(cache))
    first, out1 = run(ilora(base, lib, **kw), task_manager)
    assert first["config"]["ilora_fit_cache"]["misses"] == 2
    entries = sorted(cache.glob("*.json"))
    assert len(entries) == 2
    second, out2 = run(ilora(base, lib, **kw), task_manager)
    assert second["config"]["ilora_fit_cache"] == {"dir": str(cache), "hits": 2, "misses": 0}
    close(out1, out2)
    assert second["config"]["ilora_tasks"] == first["config"]["ilora_tasks"]
    other = run(ilora(base, lib, **{**kw, "seed": 2}), task_manager)[0]
    assert other["config"]["ilora_fit_cache"]["misses"] == 2  # another seed is another key
    entries[0].write_text("{not json")
    with caplog.at_level("WARNING"):
        third, out3 = run(ilora(base, lib, **kw), task_manager)
    assert third["config"]["ilora_fit_cache"] == {"dir": str(cache), "hits": 1, "misses": 1}
    assert "unreadable" in caplog.text
    assert json.loads(entries[0].read_text())["state"]  # rewritten
    close(out1, out3)


def test_use_cache_file_serves_one_configuration(llama, tmp_path):
    from lm_eval.api.model import CachingLM

    base, lib = llama
    db = str(tmp_path / "lm_cache_rank0.db")
    CachingLM(ilora(base, lib, strategy="retrieve_fuse", top_k=2), db)
    CachingLM(ilora(base, lib, strategy="retrieve_fuse", top_k=2), db)  # same configuration: fine
    with pytest.raises(IloraError, match="holds results of another ilora configuration"):
        CachingLM(ilora(base, lib, strategy="retrieve_fuse", top_k=3), db)


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_every_strategy_runs_through_lm_eval(kind, request, task_manager):
    """base, uniform, single_best, lorahub, ilora, retrieve_fuse and arrow through simple_evaluate."""
    base, lib = request.getfixturevalue(kind)
    args = {"base": {}, "uniform": {}, "single_best": {}, "lorahub": {"n_modules": 3, "budget": 3},
            "ilora": {"top_k": 2, "budget": 3}, "retrieve_fuse": {"top_k": 2}, "arrow": {"arrow_k": 2}}
    outputs, zero_weights = {}, set()
    for strategy, extra in args.items():
        res, per_doc = run(ilora(base, lib, strategy=strategy, fit_cache="false", **extra), task_manager)
        assert res["config"]["ilora_strategy"] == strategy
        assert 0.0 <= res["results"]["toy_mc"]["acc,none"] <= 1.0
        learned = res["config"]["ilora_tasks"]["toy_mc"]["learned"]
        if strategy in ("lorahub", "ilora") and all(w == 0 for w in _weights(learned)):
            zero_weights.add(strategy)
        outputs[strategy] = per_doc
    ll = {s: [round(c[0][0], 5) for k, v in sorted(o.items()) if k[0] == "toy_mc" for c in v] for s, o in outputs.items()}
    # an adapter-using strategy changes the log-likelihoods unless its search kept all weights at 0
    for s in args:
        if s != "base":
            assert (ll[s] == ll["base"]) == (s in zero_weights), s


def _weights(learned):
    if "examples" in learned:
        return [w for e in learned["examples"] for w in e["weights"]]
    return learned["weights"]


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_target_scorer_equals_a_direct_cross_entropy(kind, request):
    """loss=mean: token-mean cross-entropy of the targets, as lm-eval encodes them, under a composition."""
    import torch.nn.functional as F

    from ilora_eval.adaptation import Example
    from ilora_eval.composition import Composition

    base, lib = request.getfixturevalue(kind)
    lm = ilora(base, lib, strategy="base")
    scorer = lm.router.strategy.env.score
    exs = [Example("Q: red green\nA:", "red green", " yes"), Example("Q: one two three four\nA:", "x", " no sat")]
    comps = [Composition.of([1, 4], [0.8, -0.5]), Composition((), ())]
    got = scorer(comps, [exs, exs], "mean")
    assert kind == "t5" or scorer.plain_head()  # the tiny Llama's head is plain: logits at target positions only
    scorer._plain_head = False
    assert scorer(comps, [exs, exs], "mean") == pytest.approx(got, rel=1e-5)
    # independent: one example at a time, full logits, the composition set by hand
    for comp, value in zip(comps, got):
        nll, n = 0.0, 0
        for ex in exs:
            ctx, cont = lm._encode_pair(ex.prompt, ex.target)
            lm.state.set_rows([lm.state.register(comp)])
            with torch.no_grad():
                if kind == "t5":
                    logits = lm.model(input_ids=torch.tensor([ctx]), labels=torch.tensor([cont])).logits[0]
                else:
                    logits = lm.model(input_ids=torch.tensor([ctx + cont])).logits[0, len(ctx) - 1 : -1]
            lm.state.set_rows(None)
            nll -= float(F.log_softmax(logits.float(), -1).gather(1, torch.tensor(cont)[:, None]).sum())
            n += len(cont)
        assert value == pytest.approx(nll / n, rel=1e-4)
    assert got[0] != pytest.approx(got[1], rel=1e-3)
