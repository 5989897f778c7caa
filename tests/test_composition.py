"""The per-row layer against independent computations: a merged PEFT adapter holding the
composed weights (LoraHub's A=Σw·A, B=Σw·B), per-composition forwards, and Σ w·B·A x."""

import pytest
import torch
from safetensors.torch import load_file

from ilora_eval.composition import Composition, CompositionState, composed_modules, inject
from ilora_eval.library import LoraLibrary, lora_modules

AUTO = {"llama": "AutoModelForCausalLM", "gpt2": "AutoModelForCausalLM", "t5": "AutoModelForSeq2SeqLM"}


def load_base(kind, base):
    import transformers

    return getattr(transformers, AUTO[kind]).from_pretrained(base).eval()


def forward(model, kind, ids):
    if kind == "t5":
        return model(input_ids=ids, decoder_input_ids=ids[:, :5]).logits
    return model(input_ids=ids).logits


def merged_peft_logits(kind, base, lib, names, weights, ids):
    """Write the LoraHub composition into a PEFT adapter slot, merge it, run the model."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base(kind, base), str(lib / names[0]))
    per = [lora_modules(load_file(str(lib / n / "adapter_model.safetensors"))) for n in names]
    state = {}
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            module = name.split("base_model.model.", 1)[1].split(".lora_")[0]
            which = "A" if ".lora_A." in name else "B"
            state[name] = sum(w * p[module][which] for w, p in zip(weights, per))
    model.load_state_dict(state, strict=False)
    merged = model.merge_and_unload()
    with torch.no_grad():
        return forward(merged, kind, ids)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "t5"])
def test_composition_equals_merged_peft_adapter(kind, request):
    base, lib = request.getfixturevalue(kind)
    library = LoraLibrary.open(lib)
    idx, weights = [0, 2, 3], [0.7, -1.2, 0.4]
    ids = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    model = load_base(kind, base)
    with torch.no_grad():
        plain = forward(model, kind, ids)
    state = CompositionState()
    wrapped = inject(model, library, state)
    assert len(wrapped) == len(library.modules) > 0
    cid = state.register(Composition.of(idx, weights))
    state.set_rows([cid, cid])
    with torch.no_grad():
        ours = forward(model, kind, ids)
    expected = merged_peft_logits(kind, base, lib, [library.ids[i] for i in idx], weights, ids)
    assert not torch.allclose(expected, plain, atol=1e-3), "the adapters must change the logits"
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    state.set_rows(None)
    with torch.no_grad():
        torch.testing.assert_close(forward(model, kind, ids), plain)


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_mixed_batch_equals_one_composition_at_a_time(kind, request):
    base, lib = request.getfixturevalue(kind)
    library = LoraLibrary.open(lib)
    model = load_base(kind, base)
    state = CompositionState()
    inject(model, library, state)
    comps = [Composition.of([0, 1], [0.5, 0.5]), Composition((), ()), Composition.of([2, 4, 5], [1.0, -0.3, 0.8])]
    cids = [state.register(c) for c in comps]
    ids = torch.randint(4, 300, (3, 7), generator=torch.Generator().manual_seed(1))
    state.set_rows(cids)
    with torch.no_grad():
        mixed = forward(model, kind, ids)
    for row, cid in enumerate(cids):
        state.set_rows([cid])
        with torch.no_grad():
            alone = forward(model, kind, ids[row : row + 1])
        torch.testing.assert_close(mixed[row : row + 1], alone, atol=5e-5, rtol=1e-3)


def test_output_mode_is_weighted_sum_of_adapter_outputs(llama):
    base, lib = llama
    library = LoraLibrary.open(lib)
    state = CompositionState(mode="output")
    model = load_base("llama", base)
    inject(model, library, state)
    layer = composed_modules(model)[0]
    comp = Composition.of([1, 3], [0.6, -0.9])
    cid = state.register(comp)
    x = torch.randn(2, 5, layer.lora_A.shape[2])
    state.set_rows([cid, 0])
    with torch.no_grad():
        y = layer(x)
        base_y = layer.base(x)
    expected = sum(w * (x @ layer.lora_A[i].T @ layer.lora_B[i].T) for i, w in zip(comp.indices, comp.weights))
    torch.testing.assert_close(y[0], base_y[0] + expected[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y[1], base_y[1])  # the base row gets no delta


def test_beam_expansion_repeats_row_ids(llama):
    base, lib = llama
    library = LoraLibrary.open(lib)
    state = CompositionState()
    model = load_base("llama", base)
    inject(model, library, state)
    layer = composed_modules(model)[0]
    a, b = state.register(Composition.of([0], [1.0])), state.register(Composition.of([1], [1.0]))
    x = torch.randn(2, 3, layer.lora_A.shape[2])
    state.set_rows([a, b])
    with torch.no_grad():
        two = layer(x)
        state.set_rows([a, b])
        beams = layer(x.repeat_interleave(3, dim=0))  # generate() with num_beams=3
    torch.testing.assert_close(beams[0], two[0])
    torch.testing.assert_close(beams[5], two[1])


def test_composition_cache_is_reused_and_bounded(llama):
    base, lib = llama
    library = LoraLibrary.open(lib)
    state = CompositionState(cache_size=2)
    model = load_base("llama", base)
    inject(model, library, state)
    layer = composed_modules(model)[0]
    x = torch.randn(1, 2, layer.lora_A.shape[2])
    cids = [state.register(Composition.of([i], [1.0])) for i in range(3)]
    for cid in cids:
        state.set_rows([cid])
        layer(x)
    assert list(layer._cache) == cids[1:]
    first = layer._cache[cids[2]][0]
    state.set_rows([cids[2]])
    layer(x)
    assert layer._cache[cids[2]][0] is first


def test_arrow_mode_matches_a_direct_per_token_computation(llama):
    base, lib = llama
    library = LoraLibrary.open(lib)
    state = CompositionState(mode="arrow", arrow_k=2, arrow_temperature=0.7)
    model = load_base("llama", base)
    inject(model, library, state)
    layer = composed_modules(model)[1]
    comp = Composition.of([0, 2, 3, 5], [1.0] * 4)
    cid = state.register(comp)
    x = torch.randn(2, 4, layer.lora_A.shape[2], generator=torch.Generator().manual_seed(3))
    state.set_rows([cid, 0])
    with torch.no_grad():
        y = layer(x) - layer.base(x)
    for t in range(4):
        xt = x[0, t]
        deltas = {i: layer.lora_B[i] @ layer.lora_A[i] for i in comp.indices}
        protos = {i: torch.linalg.svd(d)[2][0] for i, d in deltas.items()}  # dense SVD, independent path
        scores = {i: float((protos[i] @ xt).abs()) for i in comp.indices}
        top = sorted(scores, key=scores.get, reverse=True)[:2]
        w = torch.softmax(torch.tensor([scores[i] for i in top]) / 0.7, dim=0)
        expected = sum(wi * (deltas[i] @ xt) for wi, i in zip(w, top))
        torch.testing.assert_close(y[0, t], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y[1], torch.zeros_like(y[1]))


# ---------------------------------------------------------------- placement: device_map, offload, quantized


def test_offloaded_modules_compose_on_their_execution_device(llama, tmp_path):
    """device_map="auto" with no accelerator memory (what HFLM's parallelize=True gives on CPU)
    offloads every module to disk: weights stay on "meta" and accelerate's hooks compute on the
    CPU. The factors must live on that execution device, and the logits must not change."""
    from transformers import AutoModelForCausalLM

    base, lib = llama
    library = LoraLibrary.open(lib)
    ids = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    comp = Composition.of([0, 2, 3], [0.7, -1.2, 0.4])
    outs = []
    for kwargs in ({}, {"device_map": "auto", "max_memory": {}, "offload_folder": str(tmp_path)}):
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs).eval()
        state = CompositionState()
        inject(model, library, state)
        for layer in composed_modules(model):
            assert layer.lora_A.device.type == layer.lora_B.device.type == "cpu"
        state.set_rows([state.register(comp)] * 2)
        with torch.no_grad():
            outs.append(model(input_ids=ids).logits)
    offloaded = composed_modules(model)[0].base.weight
    assert offloaded.device.type == "meta", "the second model must really be offloaded"
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=1e-5)


def test_parallelize_true_on_cpu_gives_the_same_answers(llama, tmp_path):
    from lm_eval.api.instance import Instance

    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    base, lib = llama
    reqs = [Instance("loglikelihood", {}, (f"Q: {w}\nA:", c), i, ("toy", i // 2, 1))
            for i, (w, c) in enumerate((w, c) for w in ("fox", "red", "one") for c in (" yes", " no"))]
    answers = []
    for extra in ({}, {"parallelize": True, "offload_folder": str(tmp_path)}):
        lm = IloraLM(pretrained=str(base), library=str(lib), strategy="retrieve_fuse", top_k=2, embedder="hashing",
                     device="cpu", batch_size=4, progress=False, **extra)
        answers.append([ll for ll, _ in lm.loglikelihood(reqs)])
    assert composed_modules(lm._model)[0].base.weight.device.type == "meta"
    assert answers[1] == pytest.approx(answers[0], abs=1e-5)


class _FakeInt8Linear(torch.nn.Module):
    """A layer with packed integer weights and no floating compute dtype (GPTQ-like)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.in_features, self.out_features = d_in, d_out
        self.weight = torch.nn.Parameter(torch.zeros(d_out, d_in, dtype=torch.int8), requires_grad=False)


class QuantLinear(torch.nn.Linear):
    """Named like GPTQ's kernels, float weights: refused by its name."""


@pytest.mark.parametrize("layer", [_FakeInt8Linear, QuantLinear])
def test_quantized_layers_without_float_compute_are_refused(llama, layer):
    from ilora_eval.errors import IloraError

    base, lib = llama
    library = LoraLibrary.open(lib)
    model = load_base("llama", base)
    attn = model.model.layers[1].self_attn
    attn.q_proj = layer(attn.q_proj.in_features, attn.q_proj.out_features)
    with pytest.raises(IloraError, match=r"model\.layers\.1\.self_attn\.q_proj is a quantized layer .*load the base model unquantized"):
        inject(model, library, CompositionState())


def test_unloaded_meta_weights_are_refused(llama):
    from transformers import AutoConfig, AutoModelForCausalLM

    from ilora_eval.errors import IloraError

    base, lib = llama
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    with pytest.raises(IloraError, match="no loaded weights"):
        inject(model, LoraLibrary.open(lib), CompositionState())


@pytest.mark.parametrize("bits", [8, 4])
def test_bitsandbytes_layers_compose_like_peft(llama, bits):
    """Factors in the layer's compute dtype (not its int8/uint8 storage dtype): the composition
    on a bitsandbytes base equals PEFT's LoRA on the same quantized base."""
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    base, lib = llama
    library = LoraLibrary.open(lib)
    cfg = (BitsAndBytesConfig(load_in_8bit=True) if bits == 8
           else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32))

    def load():
        # train mode: bitsandbytes' CPU 4-bit inference path needs dims >= its block size (64);
        # these layers have no dropout, so train mode computes the same function
        return AutoModelForCausalLM.from_pretrained(base, quantization_config=cfg, device_map={"": "cpu"}).train()

    ids = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    model = load()
    state = CompositionState()
    inject(model, library, state)
    layer = composed_modules(model)[0]
    assert type(layer.base).__name__ == ("Linear8bitLt" if bits == 8 else "Linear4bit")
    assert not layer.base.weight.dtype.is_floating_point and layer.lora_A.dtype == torch.float32
    state.set_rows([state.register(Composition.of([2], [1.0]))] * 2)
    ours = model(input_ids=ids).logits.detach()
    ref = PeftModel.from_pretrained(load(), str(lib / library.ids[2])).train()
    expected = ref(input_ids=ids).logits.detach()
    plain = load()(input_ids=ids).logits.detach()
    assert (expected - plain).abs().max() > 1e-2, "the adapter must change the logits"
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
