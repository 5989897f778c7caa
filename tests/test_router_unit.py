"""The Router without lm-eval's evaluator: plain TaskData, a RunContext built by hand, a tiny library.

Issue #19: the Router takes plain inputs (tasks, prompt settings, seed, metadata) and never reads
lm-eval's frames, so it can be fitted and asked for routes here, outside `simple_evaluate`.
"""

import shutil
from types import SimpleNamespace

import pytest

from ilora_eval.adaptation import Example, TaskData
from ilora_eval.composition import CompositionState
from ilora_eval.distributed import Collectives
from ilora_eval.errors import IloraError
from ilora_eval.library import LoraLibrary
from ilora_eval.lm_eval_compat import PromptSettings, RunContext
from ilora_eval.router import Router
from ilora_eval.strategies import build_config


@pytest.fixture(scope="module")
def library(llama, tmp_path_factory):
    # a copy: the index this test builds stays out of the session's library
    lib = tmp_path_factory.mktemp("unit") / "lib"
    shutil.copytree(llama[1], lib)
    return LoraLibrary.open(str(lib))


def router(library, strategy, **args) -> Router:
    return Router(strategy=strategy, config=build_config(strategy, args), library=library,
                  state=CompositionState(), scorer=None, embedder="hashing", fit_cache="false", context={},
                  collectives=Collectives(), include_paths=[], progress=False, library_spec="lib")


def requests(task, texts):
    return [SimpleNamespace(task_name=task, doc_id=i, doc=None, args=(t,)) for i, t in enumerate(texts)]


def test_single_best_fits_on_plain_task_data_and_routes_to_the_adapter_whose_texts_it_was_shown(library):
    ids = library.ids
    want = ids[1]
    examples = [Example(prompt=t, text=t, target="") for t in library.texts[want]]
    r = router(library, "single_best")
    r.prepare({"plain": TaskData("plain", None, examples, "inline")}, ["plain"], PromptSettings(), 3)
    assert r.seed_source == "lm_eval --seed" and r.config.seed == 3
    cids = r.route(requests("plain", ["any document", "another one"]))
    assert cids[0] == cids[1]  # single_best: one adapter for the whole task
    comp = r.state.compositions[cids[0]]
    chosen = ids[comp.indices[0]]
    assert len(comp.indices) == 1 and comp.weights == (1.0,)
    # the adapter chosen was trained on exactly the texts the examples showed (its topic's)
    assert library.texts[chosen] == library.texts[want]
    r.records.use_local()
    assert [(x["task"], x["doc_id"], x["adapters"]) for x in r.records.gathered] == [
        ("plain", 0, [chosen]), ("plain", 1, [chosen])]
    info = r.info("name")
    assert info["ilora_tasks"]["plain"]["adaptation_source"] == "inline"
    assert info["ilora_seed"] == {"value": 3, "source": "lm_eval --seed"}


def test_prepare_run_outside_an_evaluation_fits_the_tasks_of_the_requests(library):
    r = router(library, "uniform")
    reqs = requests("t1", ["a", "b"]) + requests("t2", ["c"])
    r.prepare_run(reqs, RunContext())  # no tasks on hand: the requests' tasks
    assert sorted(r.tasks) == ["t1", "t2"]
    assert r.seed_source.startswith("default") and r.config.seed == 0
    cids = r.route(reqs)
    n = len(library.ids)
    comp = r.state.compositions[cids[0]]
    assert set(cids) == {cids[0]} and comp.indices == tuple(range(n))
    assert comp.weights == pytest.approx([1.0 / n] * n)
    # a route is chosen once: asking again registers nothing new
    before = len(r.state.compositions)
    assert r.route(reqs) == cids and len(r.state.compositions) == before
    assert r.run_name() == f"ilora-uniform-seed0-lib{library.content_hash[:8]}"


def test_a_negative_run_seed_is_refused_and_seed_given_in_model_args_wins(library):
    with pytest.raises(IloraError, match="--seed -1 is negative"):
        router(library, "uniform").prepare_run(requests("t", ["a"]), RunContext(seed=-1))
    r = router(library, "uniform", seed=5)
    r.prepare_run(requests("t", ["a"]), RunContext(seed=9))
    assert (r.config.seed, r.seed_source) == (5, "model_args seed=")
