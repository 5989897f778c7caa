"""The benchmarks' methods compute the same thing (no timing assertions): tiny runs of their cores."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain `pytest` (python -m pytest has the checkout on sys.path already)
    sys.path.append(str(REPO))

from benchmarks import search, throughput  # noqa: E402
from benchmarks.common import ModelSpec  # noqa: E402

TINY = ModelSpec(hidden=32, layers=2, vocab=300, max_positions=128)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forwards interleaved with nevergrad's Cobyla thread crawl with several OpenMP threads on a
    busy machine; the thread count is restored for the rest of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tp(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_tp")
    cfg = throughput.ThroughputConfig(model=TINY, library=6, rank=4, top_k=3, per_row=4, compositions=3, docs=3,
                                      conts=2, seq=12, gen_docs=3, gen_seq=8, gen_tokens=4, batch=4, repeats=1,
                                      threads=None, clock="cpu", workdir=str(root), verbose=False)
    return throughput.run(cfg), root


def lls(res, method):
    return np.array(res.outputs[method]["ll"])


@pytest.mark.parametrize("a,b", [
    ("hf", "ilora:base"),  # library injected but no adapter: the plain model
    ("hf", "raw:base"),  # the raw rows batch exactly as HFLM does
    ("ilora:retrieve_fuse", "raw:per_row_rf"),
    ("ilora:retrieve_fuse", "raw:peft_rf"),  # per-row layer == PEFT adapter_names with composed slots
    ("ilora:retrieve_fuse", "raw:one_row_rf"),  # == one row at a time, unpadded
    ("ilora:ilora", "raw:peft_ilora"),
])
def test_methods_agree(tp, a, b):
    res, _ = tp
    np.testing.assert_allclose(lls(res, a), lls(res, b), atol=1e-4, rtol=0)
    assert res.outputs[a]["gen"] == res.outputs[b]["gen"]
    assert all(len(g.split()) == res.cfg.gen_tokens for g in res.outputs[a]["gen"])  # min_new_tokens held


def test_adapters_change_outputs_and_routing_differs_per_document(tp):
    res, _ = tp
    assert np.abs(lls(res, "hf") - lls(res, "ilora:retrieve_fuse")).max() > 1e-3
    assert np.abs(lls(res, "hf") - lls(res, "ilora:ilora")).max() > 1e-3
    assert res.n_compositions["retrieve_fuse"] > res.n_compositions["ilora"] >= 2
    assert res.n_compositions["ilora"] <= res.cfg.compositions


def test_report_has_every_row_and_ratios_last(tp):
    res, _ = tp
    for m in throughput.METHODS:
        assert (m, "ll") in res.times and (m, "gen") in res.times
        assert f"| {m} |" in res.text
        assert res.resident[m] > 0
    assert res.ratio("hf", "ll", "hf") == 1.0
    assert all(res.ratio(m, k, throughput.BASELINE[m]) > 0 for m in throughput.METHODS for k in ("ll", "gen"))
    assert res.ratio_line.startswith("ratios vs hf (cpu time): retrieve_fuse ll ")
    assert "one_row ll" in res.ratio_line and "\n" not in res.ratio_line
    assert res.text.splitlines()[-1].startswith("targets: ")


def test_written_adapters_are_peft_adapters(tp):
    """The fast library writer produces what PEFT loads, with the scaling LoraLibrary folds in."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ilora_eval.composition import Composition, CompositionState, inject
    from ilora_eval.library import LoraLibrary

    _, root = tp
    base_dir, lib_dir = root / "bench-llama", root / "library"
    ids = torch.randint(4, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(lib_dir / "a002")).eval()
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    library = LoraLibrary.open(lib_dir)
    state = CompositionState()
    inject(model, library, state)
    state.set_rows([state.register(Composition.of([library.ids.index("a002")], [1.0]))] * 2)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, peft(input_ids=ids).logits, atol=2e-5, rtol=1e-4)


def test_cli_defaults():
    q = throughput.parse(["--quick"])
    assert (q.threads, q.clock, q.repeats, q.docs) == (1, "cpu", throughput.QUICK["repeats"], throughput.QUICK["docs"])
    assert "ilora:base" not in q.methods
    q = throughput.parse(["--quick", "--repeats", "2", "--methods", "hf,ilora:ilora"])
    assert q.repeats == 2 and q.methods == ("hf", "ilora:ilora")
    g = throughput.parse(["--device", "cuda", "--dtype", "bfloat16", "--targets", "all"])
    assert (g.clock, g.model.dtype, g.targets) == ("wall", "bfloat16", "all")
    s = search.parse(["--quick"])
    assert (s.searches, s.budget, s.clock) == (5, 40, "cpu")


def test_lockstep_search_equals_sequential(tmp_path):
    cfg = search.SearchBenchConfig(model=ModelSpec(hidden=32, layers=2, vocab=300), library=6, rank=4, searches=5,
                                   n_adapt=5, top_k=4, budget=12, l1=0.0, prompt=8, target=2, repeats=1, threads=None,
                                   workdir=str(tmp_path), verbose=False)
    res = search.run(cfg)
    assert res.identical
    for a, b in zip(res.weights["sequential"], res.weights["lock-step"]):
        np.testing.assert_array_equal(a, b)
        assert a.shape == (4,)
    assert res.losses["sequential"] == res.losses["lock-step"]
    assert all(np.isfinite(res.losses["lock-step"]))
    assert any(np.abs(w).max() > 0 for w in res.weights["lock-step"])  # the searches moved
    assert res.forwards == {"sequential": 60, "lock-step": 12}
    assert res.ratio_line.startswith("ratios: sequential/lock-step ")
