"""Odd requests: empty continuations, contexts longer than the model, non-ASCII text, documents
without the usual fields. Results stay finite, in order, and equal to `hf` where `hf` answers."""

import math

import pytest
from lm_eval.api.instance import Instance

from test_model import hf, ilora

LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)  # far beyond 128 positions


def reqs(kind="loglikelihood"):
    docs = [({"input": "red green"}, "Q: red green\nA:", " yes"),
            ({"input": LONG}, LONG + "\nA:", " no"),
            ({"input": "héllo wörld 世界 🙂"}, "Q: héllo wörld 世界 🙂\nA:", " ✓ ja"),
            ({}, "no input field here:", " maybe"),
            ({"input": "x"}, "Q: x\nA:", "")]
    out = []
    for i, (doc, ctx, cont) in enumerate(docs):
        args = (ctx, cont) if kind == "loglikelihood" else (ctx, {"until": ["\n"], "max_gen_toks": 5, "do_sample": False})
        out.append(Instance(kind, doc, args, i, ("odd_task", i, 1)))
    return out


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_odd_loglikelihood_requests(kind, request):
    base, lib = request.getfixturevalue(kind)
    rs = reqs()
    ours = ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=2).loglikelihood(rs)
    assert len(ours) == len(rs)
    assert all(math.isfinite(ll) for ll, _ in ours)
    assert ours[-1] == (0.0, True)  # empty continuation
    base_ours = ilora(base, lib, strategy="base", batch_size=2).loglikelihood(rs[:-1])
    ref = hf(base).loglikelihood(rs[:-1])
    for a, b in zip(base_ours, ref):
        assert a[0] == pytest.approx(b[0], abs=1e-4) and a[1] == b[1]
    # the composition matters even for the truncated long context
    assert ours[1][0] != pytest.approx(base_ours[1][0], abs=1e-6)


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_odd_generation_requests(kind, request):
    base, lib = request.getfixturevalue(kind)
    rs = reqs("generate_until")
    if kind == "t5":  # a 512-token encoder context makes HFLM let T5 generate ~500 tokens: slow, no news
        rs = [r for r in rs if r.doc.get("input") != LONG]
    out = ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=3).generate_until(rs)
    assert len(out) == len(rs) and all(isinstance(s, str) for s in out)
    single = [ilora(base, lib, strategy="retrieve_fuse", top_k=2, batch_size=1).generate_until([r])[0] for r in rs]
    if kind == "llama":
        assert out == single  # batched with mixed compositions == one at a time, in request order
    else:
        # HFLM lets a seq2seq model generate up to len(longest context in the batch) + max_gen_toks
        # tokens (under plain `hf` too), so a batch may run longer: the same greedy path, extended
        assert all(a.startswith(b) or b.startswith(a) for a, b in zip(out, single))
        assert sum(a == b for a, b in zip(out, single)) >= 1


def test_rolling_loglikelihood_matches_hf_for_base_and_differs_with_adapters(llama):
    base, lib = llama
    rs = [Instance("loglikelihood_rolling", {"text": t}, (t,), i, ("roll", i, 1))
          for i, t in enumerate(["red green blue", LONG, "héllo 世界"])]
    ref = hf(base).loglikelihood_rolling(rs)
    ours = ilora(base, lib, strategy="base").loglikelihood_rolling(rs)
    assert ours == pytest.approx(ref, abs=1e-3)
    fused = ilora(base, lib, strategy="uniform").loglikelihood_rolling(rs)
    assert all(math.isfinite(x) for x in fused) and fused != pytest.approx(ref, abs=1e-3)
