"""Mixing modes as registered classes, and the scoped composition state (`rows`, `candidates`):
a toy mode registered here runs without layer.py knowing it; scopes put the table back."""

import pytest
import torch

from ilora_eval.composition import (BASE, Composition, CompositionState, MixingMode, composed_modules, get_mode,
                                    inject, mode_names, register_mode)
from ilora_eval.composition import registry
from ilora_eval.errors import IloraError
from ilora_eval.library import LoraLibrary

IDS = torch.randint(4, 300, (3, 7), generator=torch.Generator().manual_seed(1))


def composed_llama(llama, **kw):
    from transformers import AutoModelForCausalLM

    base, lib = llama
    library = LoraLibrary.open(lib)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    state = CompositionState(**kw)
    inject(model, library, state)
    return model, state


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture
def scratch_registry(monkeypatch):
    """Modes registered by a test stay in that test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_builtin_modes_are_registered_classes():
    assert mode_names()[:3] == ("param", "output", "arrow")
    for name in ("param", "output", "arrow"):
        mode = CompositionState(mode=name).mixing
        assert isinstance(mode, MixingMode) and mode.name == name and mode is get_mode(name)


def test_unknown_mode_is_a_one_line_error_naming_the_known_modes():
    with pytest.raises(IloraError) as e:
        CompositionState(mode="sum")
    msg = str(e.value)
    assert "\n" not in msg and "'sum'" in msg and all(n in msg for n in ("param", "output", "arrow"))
    state = CompositionState()
    state.mode = "nope"  # a mode set after construction is checked where the layer asks for it
    with pytest.raises(IloraError, match="'nope' is unknown"):
        state.mixing


def test_a_new_mode_is_one_class(llama, scratch_registry):
    """A toy mode (only each row's first adapter, w·B·A·x) registered here, layer.py untouched: equal
    to "output" on the one-adapter compositions (test_composition checks "output" against Σ w·B·A·x)."""

    @register_mode
    class FirstAdapter(MixingMode):
        name = "first"

        def delta(self, layer, x3, y, plan):
            A, B = layer.lora_A, layer.lora_B  # the whole library, library order
            out = torch.zeros(*x3.shape[:2], B.shape[1], dtype=A.dtype)
            for b, cid in enumerate(plan.cids):
                comp = layer.state.compositions[cid]
                if not comp.is_base:
                    i, w = comp.indices[0], comp.weights[0]
                    out[b] = w * (x3[b] @ A[i].T @ B[i].T)
            return out

    assert "first" in mode_names()
    comps = [Composition.of([2, 0], [0.8, 0.5]), Composition.of([4, 1], [-1.1, 0.3])]
    toy, state = composed_llama(llama, mode="first")
    with state.rows([state.register(comps[0]), BASE, state.register(comps[1])]):
        ours = logits(toy)
    ref, rstate = composed_llama(llama, mode="output")
    firsts = [rstate.register(Composition.of(c.indices[:1], c.weights[:1])) for c in comps]
    with rstate.rows([firsts[0], BASE, firsts[1]]):
        expected = logits(ref)
    plain = logits(ref)
    assert not torch.allclose(ours[0], plain[0], atol=1e-3) and torch.equal(ours[1], plain[1])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_rows_scope_sets_and_restores_the_rows(llama):
    model, state = composed_llama(llama)
    plain = logits(model)
    a = state.register(Composition.of([0, 3], [0.6, -0.4]))
    b = state.register(Composition.of([1], [1.0]))
    with state.rows([a, a, a]):
        ours_a = logits(model)
        with state.rows([b, BASE, b]):  # nested: the inner rows, then the outer ones again
            ours_b = logits(model)
        torch.testing.assert_close(logits(model), ours_a, rtol=0, atol=0)
    assert state.row_ids is None
    torch.testing.assert_close(logits(model), plain, rtol=0, atol=0)
    assert not torch.allclose(ours_a, plain, atol=1e-3) and torch.equal(ours_b[1], plain[1])
    # the one-composition-at-a-time reference for row 0 of the mixed batch
    with state.rows([b]):
        torch.testing.assert_close(ours_b[0:1], logits(model, IDS[0:1]), atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="boom"):
        with state.rows([a, a, a]):
            raise RuntimeError("boom")
    assert state.row_ids is None  # an exception inside does not leave rows behind
    torch.testing.assert_close(logits(model), plain, rtol=0, atol=0)


def test_rows_are_checked_where_they_enter(llama):
    model, state = composed_llama(llama)
    a = state.register(Composition.of([0], [1.0]))
    for bad, what in ((7, "composition id 7 is not registered"), (-1, "composition id -1 is not registered")):
        with pytest.raises(IloraError, match=what) as e:
            with state.rows([a, bad, a]):
                pass
        assert "\n" not in str(e.value)
    with pytest.raises(IloraError, match="one id per batch row"):
        state.set_rows([[a, a]])
    assert state.row_ids is None  # a rejected input leaves the state as it was
    with pytest.raises(IloraError, match="a batch of 3 rows reached the composed layer with 2 composition ids") as e:
        with state.rows([a, a]):
            logits(model)
    assert "\n" not in str(e.value)
    with state.rows([a, a, a]):
        every_row = logits(model)
    with state.rows([a]):  # generation's expansion (beams, several returns): each id repeats
        torch.testing.assert_close(logits(model), every_row, rtol=0, atol=0)


def test_candidates_scope_registers_transiently_and_drops_on_exit(llama):
    model, state = composed_llama(llama)
    kept = state.register(Composition.of([1], [1.0]))
    before = (list(state.compositions), dict(state.ids))
    fresh = Composition.of([0, 2], [0.3, 0.9])
    with state.candidates() as register:
        assert register(Composition.of([1], [1.0])) == kept  # a routed composition keeps its id
        cid = register(fresh)
        assert cid == len(before[0]) and state.compositions[cid] == fresh
        with pytest.raises(IloraError, match="do not nest"):
            with state.candidates():
                pass
        with state.rows([cid, kept, cid]):
            ours = logits(model)
        # candidates are never cached by the layers; routed compositions are
        assert all(cid not in m._cache and kept in m._cache for m in composed_modules(model))
    assert (state.compositions, state.ids) == before and state.transient_from is None
    ref = state.register(fresh)  # the same composition registered for good composes the same
    with state.rows([ref, kept, ref]):
        torch.testing.assert_close(logits(model), ours, rtol=0, atol=0)
    with pytest.raises(IloraError, match="not registered"):
        state.set_rows([ref + 1])


def test_scorer_leaves_the_table_and_rows_as_it_found_them(llama):
    from ilora_eval.adaptation import Example
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    base, lib = llama
    lm = IloraLM(pretrained=str(base), library=str(lib), strategy="base", embedder="hashing", device="cpu",
                 progress=False, batch_size=2)
    scorer = lm.router.strategy.env.score
    routed = lm.state.register(Composition.of([3], [1.0]))
    before = (list(lm.state.compositions), dict(lm.state.ids))
    exs = [Example(f"Q: {w} red\nA:", w, " yes") for w in ("one", "two", "three")]
    comps = [Composition.of([0, 2], [0.5, -0.3]), Composition.of([3], [1.0])]
    losses = scorer(comps, [exs, exs])
    assert (lm.state.compositions, lm.state.ids) == before and lm.state.row_ids is None
    assert lm.state.transient_from is None and routed == lm.state.ids[Composition.of([3], [1.0])]
    # the same losses from each candidate alone (a batch of one composition)
    assert [scorer([c], [exs])[0] for c in comps] == pytest.approx(losses, rel=1e-6)
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)
