"""A library's identity covers its adapters' order (issue #16.1): a cached fit stores adapter
positions, so a reordered manifest must never reuse another order's weights, name another order's
output folder, or share another order's --use_cache file. A manifest listing one adapter twice is
refused."""

import json

import pytest

from ilora_eval.errors import IloraError
from ilora_eval.library import LoraLibrary

from test_model import close, ilora, run, task_manager  # noqa: F401  (fixture)

NAMES = ["00_colors", "01_numbers", "02_animals", "03_logic", "04_sorting", "05_questions"]


def manifest(path, lib, names):
    path.write_text(json.dumps({"adapters": [{"path": str(lib / n)} for n in names]}))
    return path


@pytest.fixture
def two_orders(llama, tmp_path):
    base, lib = llama
    return base, manifest(tmp_path / "a.json", lib, NAMES), manifest(tmp_path / "b.json", lib, NAMES[::-1])


def test_reordered_manifest_gives_the_numbers_of_a_fresh_fit(two_orders, tmp_path, task_manager):  # noqa: F811
    base, a, b = two_orders
    kw = dict(strategy="lorahub", seed=1, n_modules=3, budget=4)
    cache = tmp_path / "fits"
    run(ilora(base, a, fit_cache=str(cache), **kw), task_manager, ["toy_mc"])
    reused, out_reused = run(ilora(base, b, fit_cache=str(cache), **kw), task_manager, ["toy_mc"])
    fresh, out_fresh = run(ilora(base, b, fit_cache="false", **kw), task_manager, ["toy_mc"])
    close(out_reused, out_fresh)
    assert reused["config"]["ilora_fit_cache"]["hits"] == 0
    # the results config names the adapters the run actually weighted
    assert reused["config"]["ilora_tasks"]["toy_mc"]["learned"] == fresh["config"]["ilora_tasks"]["toy_mc"]["learned"]
    # the same manifest again does reuse its own fit
    again, out_again = run(ilora(base, b, fit_cache=str(cache), **kw), task_manager, ["toy_mc"])
    assert again["config"]["ilora_fit_cache"]["hits"] == 1
    close(out_again, out_fresh)


def test_order_changes_the_hash_the_run_name_and_the_use_cache_stamp(two_orders, tmp_path):
    from lm_eval.api.model import CachingLM

    base, a, b = two_orders
    assert LoraLibrary.open(a).content_hash != LoraLibrary.open(b).content_hash
    assert LoraLibrary.open(a).content_hash == LoraLibrary.open(a).content_hash
    lm_a, lm_b = ilora(base, a, strategy="uniform"), ilora(base, b, strategy="uniform")
    lm_a.router.resolve_seed(0), lm_b.router.resolve_seed(0)
    assert lm_a.router.run_name() != lm_b.router.run_name()
    db = str(tmp_path / "lm_cache_rank0.db")
    CachingLM(lm_a, db)
    with pytest.raises(IloraError, match="holds results of another ilora configuration"):
        CachingLM(lm_b, db)


def test_the_hash_is_independent_of_the_manifest_form(llama, tmp_path):
    """A folder (sorted listing) and a manifest listing the same adapters in the same order are
    the same library."""
    _, lib = llama
    assert LoraLibrary.open(manifest(tmp_path / "m.json", lib, NAMES)).content_hash == LoraLibrary.open(lib).content_hash


@pytest.mark.parametrize("entries", [
    [{"path": "01_numbers"}, {"path": "02_animals"}, {"path": "01_numbers"}],  # the same adapter
    [{"id": "x", "path": "01_numbers"}, {"id": "x", "path": "02_animals"}],  # one id for two adapters
    [{"id": "x", "path": "01_numbers"}, {"id": "y", "path": "01_numbers"}],  # one adapter under two ids
])
def test_an_adapter_listed_twice_is_refused(llama, tmp_path, entries):
    _, lib = llama
    m = tmp_path / "dup.json"
    m.write_text(json.dumps({"adapters": [{**e, "path": str(lib / e["path"])} for e in entries]}))
    with pytest.raises(IloraError, match="twice") as err:
        LoraLibrary.open(m)
    assert "\n" not in str(err.value)


def test_an_adapter_listed_twice_in_a_txt_manifest_is_refused(llama, tmp_path):
    _, lib = llama
    m = tmp_path / "m.txt"
    m.write_text(f"{lib / '01_numbers'}\n{lib / '02_animals'}\n{lib / '01_numbers'}\n")
    with pytest.raises(IloraError, match="01_numbers.*twice"):
        LoraLibrary.open(m)
