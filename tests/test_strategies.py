"""Strategies on a hand-made embedding space: retrieval order, routing, weights."""

import numpy as np
import pytest

from ilora_eval.adaptation import Example, TaskData
from ilora_eval.composition import Composition
from ilora_eval.errors import IloraError
from ilora_eval.search import SearchConfig, l1_penalty, make_optimizer
from ilora_eval.strategies.base import StrategyEnv
from ilora_eval.strategies import build_config, strategy_class

DIM = 8


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


# six adapters along distinct directions; texts map to chosen vectors
CENTROIDS = np.stack([unit(np.eye(DIM)[i] + 0.1) for i in range(6)])
VECTORS = {
    "ex0": unit(np.eye(DIM)[0]), "ex1": unit(np.eye(DIM)[3]), "ex2": unit(np.eye(DIM)[5]),
    "ex0 a": unit(np.eye(DIM)[0] + 0.2 * np.eye(DIM)[1]), "ex1 b": unit(np.eye(DIM)[3] + 0.2 * np.eye(DIM)[2]),
    "ex2 c": unit(np.eye(DIM)[5] + 0.2 * np.eye(DIM)[4]),
    "doc near ex1": unit(np.eye(DIM)[3] + 0.3 * np.eye(DIM)[0]),
    "doc near ex2": unit(np.eye(DIM)[5] + 0.1),
}


def quadratic_score(comps, examples, objective="lorahub"):
    # a loss with a known optimum per adapter (the weight 0.1·index); independent of examples
    return [sum((w - 0.1 * i) ** 2 for i, w in zip(c.indices, c.weights)) + 0.01 * sum(
        (0.1 * i) ** 2 for i in range(6) if i not in c.indices) for c in comps]


def env(score=quadratic_score):
    return StrategyEnv(ids=[f"a{i}" for i in range(6)], centroids=lambda: CENTROIDS,
                       embed=lambda texts: np.stack([VECTORS[t] for t in texts]), score=score, progress=False)


def task():
    exs = [Example("p0", "ex0", " a"), Example("p1", "ex1", " b"), Example("p2", "ex2", " c")]
    return TaskData("t", None, exs, "test")


def make(name, **args):
    cfg = build_config(name, dict(args))
    return strategy_class(name)(cfg, env())


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_ilora_retrieves_and_routes_by_order(order):
    s = make("ilora", top_k=2, budget=6, order=order)
    t = task()
    s.fit([t])
    sims = np.stack([VECTORS[e.text + e.target] for e in t.examples]) @ CENTROIDS.T
    for k, learned in enumerate(s.state["t"].compositions):
        expected = np.argsort(-sims[k] if order == "desc" else sims[k], kind="stable")[:2]
        assert list(learned.indices) == [int(i) for i in expected]
    routed = s.route(t, ["doc near ex1", "doc near ex2"])
    ex_sims = np.stack([VECTORS[d] for d in ["doc near ex1", "doc near ex2"]]) @ np.stack(
        [VECTORS[e.text] for e in t.examples]).T
    want = ex_sims.argmax(1) if order == "desc" else ex_sims.argmin(1)
    assert [r.example for r in routed] == [int(w) for w in want]
    if order == "desc":
        assert [r.example for r in routed] == [1, 2]
    # each routed document gets exactly its example's learned composition
    for r in routed:
        ex = s.state["t"].compositions[r.example]
        assert r.composition == Composition.of(ex.indices, ex.weights)


def test_ilora_weights_equal_a_sequential_search_per_example():
    s = make("ilora", top_k=2, budget=8)
    t = task()
    s.fit([t])
    cfg = SearchConfig(budget=8)
    for learned in s.state["t"].compositions:
        idx = list(learned.indices)
        opt = make_optimizer(2, 1, cfg)
        ref = opt.minimize(lambda w: quadratic_score([Composition.of(idx, w)], None)[0] + l1_penalty(w, cfg)).value
        np.testing.assert_allclose(learned.weights, ref, rtol=0, atol=0)


def lorahub_reference_draw(names, seed, n):
    """LoraHub's reproduce_bbh.py: random.seed(seed); random.sample(LORA_MODULE_NAMES, 20)."""
    import random

    random.seed(seed)
    return random.sample(names, n)


def test_lorahub_draw_is_lorahubs_sample_over_the_listed_order():
    import random

    names = [f"lorahub/flan_t5_large-task{i:02d}" for i in range(12)]
    random.Random(0).shuffle(names)  # a manifest listed in no particular order
    for seed in (1, 2, 3):
        s = strategy_class("lorahub")(build_config("lorahub", {"n_modules": 5, "seed": seed}), env())
        s.env.ids = names
        assert [names[i] for i in s.drawn_modules()] == lorahub_reference_draw(names, seed, 5)
    a, c = make("lorahub", n_modules=3, seed=4), make("lorahub", n_modules=3, seed=5)
    assert a.drawn_modules() != c.drawn_modules()
    with pytest.raises(IloraError, match="n_modules=9 is larger than the library"):
        make("lorahub", n_modules=9).drawn_modules()


def test_lorahub_draw_on_the_shipped_196_adapter_manifest():
    from pathlib import Path

    manifest = Path(__file__).resolve().parents[1] / "scripts" / "paper" / "lorahub_flan_t5_large.txt"
    names = [line.strip() for line in manifest.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(names) == 196
    for seed in range(1, 6):
        s = strategy_class("lorahub")(build_config("lorahub", {"n_modules": 20, "seed": seed}), env())
        s.env.ids = names
        assert [names[i] for i in s.drawn_modules()] == lorahub_reference_draw(names, seed, 20)


def test_retrieve_fuse_softmax_weights():
    s = make("retrieve_fuse", top_k=3, temperature=0.5)
    (r,) = s.route(task(), ["doc near ex2"])
    sims = CENTROIDS @ VECTORS["doc near ex2"]
    top = np.argsort(-sims, kind="stable")[:3]
    w = np.exp((sims[top] - sims[top].max()) / 0.5)
    assert r.composition.indices == tuple(int(i) for i in top)
    np.testing.assert_allclose(r.composition.weights, w / w.sum(), rtol=1e-6)


def test_uniform_single_best_and_base():
    (u,) = make("uniform").route(task(), ["doc near ex1"])
    assert u.composition.indices == tuple(range(6)) and set(u.composition.weights) == {1 / 6}
    (uk,) = make("uniform", top_k=2).route(task(), ["doc near ex1"])
    assert uk.composition.indices == (3, 0) and uk.composition.weights == (0.5, 0.5)
    sb = make("single_best")
    sb.fit([task()])
    mean = np.stack([VECTORS[e.text + e.target] for e in task().examples]).mean(0)
    assert sb.route(task(), ["doc near ex1"])[0].composition.indices == (int(np.argmax(CENTROIDS @ mean)),)
    assert make("base").route(task(), ["doc near ex1"])[0].composition.is_base


def test_bad_strategy_arguments():
    with pytest.raises(IloraError, match="strategy='nope' is unknown"):
        build_config("nope", {})
    with pytest.raises(IloraError, match="order='up' is unknown"):
        build_config("ilora", {"order": "up"})
    with pytest.raises(IloraError, match="top_k=.many. is not a whole number"):
        build_config("ilora", {"top_k": "many"})
    with pytest.raises(IloraError, match="top_k=7 is larger than the library"):
        make("ilora", top_k=7).fit([task()])
    with pytest.raises(IloraError, match="needs adaptation examples but task 'empty'"):
        make("ilora").fit([TaskData("empty", None, [], "none")])


def test_routing_with_the_default_sentence_embedder():
    """The packaged all-MiniLM-L6-v2 routes a document to the example about the same thing."""
    from ilora_eval.embeddings import load_embedder

    emb = load_embedder(None)
    exs = [Example("", "What is 17 plus 25?", " 42"), Example("", "Translate 'cat' into French.", " chat"),
           Example("", "Is the sky green? Answer yes or no.", " no")]
    t = TaskData("t", None, exs, "test")
    e = StrategyEnv(ids=[f"a{i}" for i in range(3)], centroids=lambda: emb.encode(["math", "french", "logic"]),
                    embed=emb.encode, score=quadratic_score, progress=False)
    s = strategy_class("ilora")(build_config("ilora", {"top_k": 1, "budget": 2}), e)
    s.fit([t])
    routed = s.route(t, ["How much is 8 plus 9?", "How do you say 'dog' in French?", "Is water dry? yes or no"])
    assert [r.example for r in routed] == [0, 1, 2]
    asc = strategy_class("ilora")(build_config("ilora", {"top_k": 1, "budget": 2, "order": "asc"}), e)
    asc.fit([t])
    assert [r.example for r in asc.route(t, ["How much is 8 plus 9?"])] != [0]
