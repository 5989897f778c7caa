"""The weight search's scorer: batches like lm-eval, projects the vocabulary only where it may."""

import pytest
import torch

from ilora_eval.adaptation import Example
from ilora_eval.composition import Composition, CompositionState
from ilora_eval.scoring import ScoringModel, TargetScorer


def ilora(base, lib, **kw):
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    return IloraLM(pretrained=str(base), library=str(lib), strategy="base", embedder="hashing", device="cpu",
                   progress=False, **kw)


EXAMPLES = [Example(f"Q: {w} red\nA:", w, " yes") for w in ("one", "two", "three", "four", "five")]


@pytest.mark.parametrize("batch_size", [2, 3, 64])
def test_search_rows_per_forward_follow_batch_size(llama, batch_size):
    base, lib = llama
    lm = ilora(base, lib, batch_size=batch_size)
    scorer = lm.router.strategy.env.score
    sizes = []
    forward = scorer._forward
    scorer._forward = lambda chunk: sizes.append(len(chunk)) or forward(chunk)
    comps = [Composition.of([0, 2], [0.5, -0.3]), Composition.of([1], [1.0])]
    batched = scorer(comps, [EXAMPLES, EXAMPLES])
    assert max(sizes) == min(batch_size, 10) and sum(sizes) == 10
    one = ilora(base, lib, batch_size=1).router.strategy.env.score
    assert one(comps, [EXAMPLES, EXAMPLES]) == pytest.approx(batched, rel=1e-5)


def test_auto_batch_size_detects_a_size_for_the_search(llama):
    base, lib = llama
    lm = ilora(base, lib, batch_size="auto", max_batch_size=16)
    assert 1 <= lm.router.strategy.env.score.sm.rows_per_batch <= 16


def _scorer(model):
    sm = ScoringModel(model=model, backend="causal", device=torch.device("cpu"), max_length=32, pad_id=0, eos_id=1,
                      encode_pair=None, encode=None, encode_special=None)
    return TargetScorer(sm, CompositionState())


def test_head_projection_at_target_positions_only_where_the_head_is_plain():
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=8)
    torch.manual_seed(0)
    assert _scorer(LlamaForCausalLM(LlamaConfig(**small)).eval()).plain_head()
    # Gemma 2 soft-caps its logits after the projection: the full forward must be kept
    capped = Gemma2ForCausalLM(Gemma2Config(**small, final_logit_softcapping=1.0)).eval()
    assert not _scorer(capped).plain_head()


def test_decoder_only_objective_ends_each_answer_with_the_tasks_stop(llama):
    """LoraHub's objective has no decoder-only reference: the answer is followed by what ends it at
    test time (the task's first `until`, tokenized with it), else by EOS; pooled mean / K."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, lib = llama
    scorer = ilora(base, lib, batch_size=4).router.strategy.env.score
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    for stop in ("\n", None):
        exs = [Example(e.prompt, e.text, e.target, stop=stop) for e in EXAMPLES]
        nll, n = 0.0, 0
        for ex in exs:
            ctx = tok(ex.prompt, add_special_tokens=False).input_ids
            whole = tok(ex.prompt + ex.target + (stop or ""), add_special_tokens=False).input_ids
            cont = whole[len(ctx):] + ([] if stop else [tok.eos_token_id])
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ctx + cont])).logits[0, len(ctx) - 1:-1]
            nll -= float(torch.log_softmax(logits, -1).gather(1, torch.tensor(cont)[:, None]).sum())
            n += len(cont)
        got = scorer([Composition((), ())], [exs], "lorahub")[0]
        assert got == pytest.approx(nll / n / len(exs), rel=1e-5)
