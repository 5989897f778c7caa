"""The lm-eval face (model_wrappers/ilora_lm.py) against upstream on the same inputs, and
`--model ilora`'s own arguments (model_args.OWN_DEFAULTS), issue #19.6."""

import pytest
from lm_eval.api.instance import Instance

from ilora_eval.errors import IloraError
from ilora_eval.model_args import OWN_DEFAULTS, check_model_args
from test_model import hf, ilora


def ll_requests(pairs):
    return [Instance("loglikelihood", {}, pair, i, ("face", i, 1)) for i, pair in enumerate(pairs)]


def test_empty_context_is_encoded_as_upstream_does(llama):
    # the wrapper's encoding of an empty context is TemplateLM's (prefix token as the context);
    # a base-strategy ilora must score it as --model hf does
    base, lib = llama
    rs = ll_requests([("", " red green"), ("", "blue"), ("Q: red\nA:", " green")])
    ours = ilora(base, lib, strategy="base", batch_size=1).loglikelihood(rs)
    ref = hf(base, batch_size=1).loglikelihood(rs)
    assert [b for _, b in ours] == [b for _, b in ref]
    assert [a for a, _ in ours] == pytest.approx([a for a, _ in ref], abs=1e-5)


def test_adapter_cache_reaches_the_composition_state_and_keeps_the_answers(llama):
    base, lib = llama
    rs = ll_requests([("Q: red green\nA:", " yes"), ("Q: blue\nA:", " no")])
    small = ilora(base, lib, strategy="uniform", adapter_cache="1")
    assert small.state.adapter_cache == 1
    default = ilora(base, lib, strategy="uniform")
    assert default.state.adapter_cache == OWN_DEFAULTS["adapter_cache"] == 256
    # one adapter on the device at a time: the same numbers as all of them
    assert small.loglikelihood(rs) == default.loglikelihood(rs)


@pytest.mark.parametrize("bad", ["0", "-3", "2.5", "many", True])
def test_a_bad_adapter_cache_is_refused_before_any_model_load(bad):
    with pytest.raises(IloraError, match="adapter_cache=.* must be a whole number >= 1"):
        check_model_args("base", None, "param", {"adapter_cache": bad}, set())


def test_own_arguments_are_checked_and_default_in_one_place():
    args = check_model_args("base", None, "param", {"progress": "false"}, set())
    assert args.own == {**OWN_DEFAULTS, "progress": False}
    assert args.router_kwargs(None)["include_paths"] == []
    assert check_model_args("base", None, "param", {"include_path": "a:b"}, set()).router_kwargs("L")[
        "include_paths"] == ["a", "b"]
    with pytest.raises(IloraError, match="check_base='flase' is neither true nor false"):
        check_model_args("base", None, "param", {"check_base": "flase"}, set())
