"""TaskFit: the typed per-task fit, its cache JSON round trip and its results-JSON form."""

import json

import numpy as np
import pytest

from ilora_eval.adaptation import Example, TaskData
from ilora_eval.composition import Composition
from ilora_eval.fit_cache import FitCache
from ilora_eval.strategies import TaskFit

IDS = ["a0", "a1", "a2", "a3"]


def fits():
    return {
        "weights": TaskFit.weights([2, 0, 3], [0.5, 0.0, -1.25]),
        "adapter": TaskFit.adapter(1),
        "examples": TaskFit.examples([([0, 1], [0.1, 0.2]), ([3, 2], [-0.3, 0.0])],
                                     np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)),
    }


@pytest.mark.parametrize("kind", ["weights", "adapter", "examples"])
def test_json_round_trip(kind):
    fit = fits()[kind]
    data = json.loads(json.dumps(fit.to_json()))
    assert TaskFit.from_json(data) == fit
    assert TaskFit.from_json(data).kind == kind


def test_json_forms_keep_the_untyped_shapes():
    f = fits()
    assert f["weights"].to_json() == {"indices": [2, 0, 3], "weights": [0.5, 0.0, -1.25]}
    assert f["adapter"].to_json() == {"adapter": 1}
    emb = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32).tolist()
    assert f["examples"].to_json() == {"examples": [{"indices": [0, 1], "weights": [0.1, 0.2]},
                                                    {"indices": [3, 2], "weights": [-0.3, 0.0]}],
                                       "example_embeddings": emb}
    # the results JSON: adapter ids, every weight the search returned (zeros too), no embeddings
    assert f["weights"].named(IDS) == {"adapters": ["a2", "a0", "a3"], "weights": [0.5, 0.0, -1.25]}
    assert f["adapter"].named(IDS) == {"adapter": "a1"}
    assert f["examples"].named(IDS) == {"examples": [{"adapters": ["a0", "a1"], "weights": [0.1, 0.2]},
                                                     {"adapters": ["a3", "a2"], "weights": [-0.3, 0.0]}]}


def test_routing_drops_zero_weights():
    f = fits()
    assert f["weights"].composition() == Composition.of([2, 3], [0.5, -1.25])
    assert f["adapter"].composition() == Composition.of([1], [1.0])
    assert f["examples"].composition(1) == Composition.of([3], [-0.3])


@pytest.mark.parametrize("bad", [[], {"indices": [0]}, {"examples": [{"indices": [0], "weights": [1.0]}]},
                                 {"examples": [], "example_embeddings": [[1.0]]}, {"adapter": "x"}])
def test_malformed_json_is_rejected(bad):
    with pytest.raises((ValueError, KeyError, TypeError)):
        TaskFit.from_json(bad)


def test_fit_cache_stores_the_json_form(tmp_path, caplog):
    task = TaskData("t", None, [Example("p", "x", " y")], "test")
    cache = FitCache(tmp_path, {"version": 0})
    fit = fits()["examples"]
    cache.put(task, fit)
    assert cache.get(task) == fit and cache.hits == 1
    entry = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert entry["state"] == fit.to_json()
    entry["state"] = {"indices": [0]}  # weights missing: recomputed, with a warning
    next(tmp_path.glob("*.json")).write_text(json.dumps(entry))
    assert cache.get(task) is None and cache.misses == 1
    assert "unreadable" in caplog.text


def test_fit_cache_entry_of_another_configuration_is_never_used(tmp_path, caplog):
    """An entry's positions mean the adapters of the library order it was learned on: one found
    under this key but written for another context (another library order) is recomputed."""
    task = TaskData("t", None, [Example("p", "x", " y")], "test")
    mine = FitCache(tmp_path, {"version": 4, "library_hash": "order-a"})
    other = FitCache(tmp_path, {"version": 4, "library_hash": "order-b"})
    other.put(task, fits()["weights"])
    (tmp_path / f"{other.key(task)}.json").rename(tmp_path / f"{mine.key(task)}.json")  # a key collision
    assert mine.get(task) is None and mine.misses == 1
    assert "another configuration" in caplog.text
    mine.put(task, fits()["adapter"])
    assert mine.get(task) == fits()["adapter"] and mine.hits == 1
