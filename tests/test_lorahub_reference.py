"""The weight search optimises LoraHub's own objective and so learns LoraHub's weights.

The reference is recomputed here the way sail-sg/lorahub's `lorahub/algorithm.py` does it: the
adapters' PEFT state dicts summed with the weights (A and B separately), loaded with
`set_peft_model_state_dict`, inputs and targets tokenized on their own with the tokenizer's
special tokens, the model's own `outputs.loss` on the padded batch divided by the number of
examples, plus 0.05·mean|w|; then nevergrad's NGOpt `minimize` from 0 within ±1.5, budget 40.
"""

import json

import numpy as np
import pytest
import torch

import tiny
from ilora_eval.adaptation import Example, TaskData
from ilora_eval.composition import Composition
from ilora_eval.search import SearchConfig, l1_penalty

PAIRS = [("red green blue", "yes"), ("one two three four", "no"), ("the quick brown fox", "cat sat"),
         ("sort the list of numbers", "one two"), ("true or false question", "true")]
WEIGHT_VECTORS = [np.zeros(6), np.full(6, 0.5), np.array([1.2, -0.7, 0.0, 0.3, -1.5, 0.9]),
                  np.array([-0.2, 0.4, 1.1, -1.0, 0.05, 0.6])]


@pytest.fixture(scope="module")
def t5_eos(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5eos")
    base, lib = root / "base", root / "lib"
    tiny.make_model(base, "t5", append_eos=True)
    # adapters of a realistic size: the two code paths compose in float32 in different orders, and the
    # larger the deltas, the further that rounding (~1e-7 of the loss here) moves Cobyla's path
    tiny.make_library(base, lib, "t5", scale=0.15)
    return base, lib


def examples():
    return [Example(prompt=i, text=i, target=f" {t}", answer=t) for i, t in PAIRS]


class LoraHubReference:
    """lorahub_learning's loss, written as its code computes it."""

    def __init__(self, base, lib, names, causal=False):
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        auto = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
        self.tok = AutoTokenizer.from_pretrained(base)
        self.model = PeftModel.from_pretrained(auto.from_pretrained(base), lib / names[0]).eval()
        self.cache = [load_file(lib / n / "adapter_model.safetensors") for n in names]
        self.causal = causal

    def loss(self, weights) -> float:
        from peft.utils.save_and_load import set_peft_model_state_dict

        composed = {k: sum(float(w) * sd[k] for w, sd in zip(weights, self.cache)) for k in self.cache[0]}
        set_peft_model_state_dict(self.model, composed)
        inputs = [i for i, _ in PAIRS]
        targets = [t for _, t in PAIRS]
        with torch.no_grad():
            if not self.causal:  # lorahub/algorithm.py: preprocess_function + default_get_loss
                enc = self.tok(inputs, max_length=2048, padding=True, truncation=True, return_tensors="pt")
                labels = self.tok(targets, max_length=2048, padding=True, truncation=True, return_tensors="pt")["input_ids"]
                labels[labels == self.tok.pad_token_id] = -100
                loss = self.model(**enc, labels=labels).loss
            else:  # no LoraHub reference for decoder-only: the continuation and EOS, pooled token mean
                nll, n = 0.0, 0
                for i, t in PAIRS:
                    ctx = self.tok(i, add_special_tokens=False).input_ids
                    cont = self.tok(i + " " + t, add_special_tokens=False).input_ids[len(ctx):] + [self.tok.eos_token_id]
                    logits = self.model(input_ids=torch.tensor([ctx + cont])).logits[0, len(ctx) - 1:-1]
                    nll -= float(torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(cont)[:, None]).sum())
                    n += len(cont)
                loss = torch.tensor(nll / n)
        return float(loss) / len(PAIRS) + 0.05 * float(np.abs(weights).sum()) / len(weights)


def ilora_lm(base, lib, **kw):
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    return IloraLM(pretrained=str(base), library=str(lib), embedder="hashing", device="cpu", batch_size=8,
                   progress=False, fit_cache="false", **kw)


def test_the_tokenizer_appends_eos(t5_eos):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(t5_eos[0])
    assert tok("yes").input_ids[-1] == tok.eos_token_id


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_loss_equals_lorahubs_at_every_weight_vector(kind, t5_eos, llama):
    base, lib = t5_eos if kind == "t5" else llama
    lm = ilora_lm(base, lib, strategy="base")
    names = lm.library.ids
    ref = LoraHubReference(base, lib, names, causal=kind == "llama")
    score = lm.router.strategy.env.score
    cfg = SearchConfig()
    for w in WEIGHT_VECTORS:
        ours = score([Composition.of(range(6), w)], [examples()], "lorahub")[0] + l1_penalty(w, cfg)
        assert ours == pytest.approx(ref.loss(w), abs=1e-5)
    # the objective that drops the EOS token and the division is a different number
    w = WEIGHT_VECTORS[2]
    assert score([Composition.of(range(6), w)], [examples()], "mean")[0] + l1_penalty(w, cfg) != pytest.approx(
        ref.loss(w), abs=1e-3)


def test_lorahub_learns_lorahubs_weights_on_t5(t5_eos):
    import nevergrad as ng

    base, lib = t5_eos
    lm = ilora_lm(base, lib, strategy="lorahub", n_modules=6, seed=1)
    strategy = lm.router.strategy
    task = TaskData("t", None, examples(), "test")
    strategy.fit([task])
    learned = strategy.state["t"].compositions[0]
    drawn = [lm.library.ids[i] for i in learned.indices]
    ref = LoraHubReference(base, lib, drawn)
    param = ng.p.Array(init=[0] * 6, upper=[1.5] * 6, lower=[-1.5] * 6)
    expected = ng.optimizers.NGOpt(parametrization=param, budget=40).minimize(ref.loss).value
    diff = float(np.abs(np.asarray(learned.weights) - expected).max())
    print(json.dumps({"modules": drawn, "ours": list(learned.weights), "lorahub": list(expected), "max_diff": diff}))
    assert diff < 1e-3  # measured 4e-5: float32 rounding of two composition code paths, nothing else
    assert np.abs(expected).max() > 0.05  # the search moved: the comparison is not 0 against 0
