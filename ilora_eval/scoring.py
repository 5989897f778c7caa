"""The weight search's objective: target cross-entropy under many compositions, batched.

Rows are (composition, example) pairs; each row's composition is applied by the per-row layer,
so all candidates of a lock-step search step share forwards.

Objectives (`loss=`):
- "lorahub" (default): LoraHub's `default_get_loss` exactly. Seq2seq: the input and the answer are
  each tokenized on their own WITH the tokenizer's special tokens (T5's `</s>` closes the answer
  and is scored), the token-mean cross-entropy is pooled over all examples of the search (the
  model's `outputs.loss` on one padded batch), then divided once more by the number of examples.
  Decoder-only models have no LoraHub reference: the continuation lm-eval would score is followed
  by what ends the answer at test time, so the search also learns to stop: the task's first
  `until` string when it generates (tokenized with the answer, as the model would produce them),
  else the EOS token; pooled and divided the same way.
- "mean": the continuation exactly as lm-eval encodes it (no EOS), pooled token-mean, no division.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ilora_eval.adaptation import Example
from ilora_eval.composition import Composition, CompositionState
from ilora_eval.errors import IloraError

OBJECTIVES = ("lorahub", "mean")


@dataclass
class ScoringModel:
    """What the scorer needs of a model, and nothing of lm-eval's LM class."""

    model: torch.nn.Module
    backend: str  # "causal" | "seq2seq"
    device: torch.device
    max_length: int
    pad_id: int
    eos_id: int | None
    encode_pair: Callable[[str, str], tuple[list[int], list[int]]]  # lm-eval's (context, continuation) tokens
    encode: Callable[[str], list[int]]  # a context's tokens, as lm-eval encodes it
    encode_special: Callable[[str], list[int]]  # the tokenizer with its special tokens (LoraHub's targets)
    rows_per_batch: int = 64


def encode_example(sm: ScoringModel, ex: Example, objective: str) -> tuple[list[int], list[int]]:
    if objective == "mean":
        return sm.encode_pair(ex.prompt, ex.target)
    if sm.backend == "seq2seq":
        return sm.encode(ex.prompt), sm.encode_special(ex.answer)
    if ex.stop:
        return sm.encode_pair(ex.prompt, ex.target + ex.stop)
    ctx, cont = sm.encode_pair(ex.prompt, ex.target)
    return ctx, (cont + [sm.eos_id]) if sm.eos_id is not None else cont


class TargetScorer:
    def __init__(self, sm: ScoringModel, state: CompositionState):
        self.sm = sm
        self.state = state
        self._enc: dict[tuple[str, str, str, str], tuple[list[int], list[int]]] = {}
        self._plain_head: bool | None = None

    def encode(self, ex: Example, objective: str) -> tuple[list[int], list[int]]:
        key = (objective, ex.prompt, ex.target, ex.answer, ex.stop)
        if key not in self._enc:
            self._enc[key] = encode_example(self.sm, ex, objective)
        return self._enc[key]

    @torch.no_grad()
    def __call__(self, comps: list[Composition], examples: list[list[Example]], objective: str = "lorahub") -> list[float]:
        if objective not in OBJECTIVES:
            raise IloraError(f"loss={objective!r} is unknown; choose one of {', '.join(OBJECTIVES)}")
        if self.sm.backend == "causal":
            self.plain_head()  # probed before any rows are set: the probe is one base-model row
        rows = []  # (candidate, composition id, ctx, cont)
        nll = torch.zeros(len(comps), dtype=torch.float64)
        ntok = torch.zeros(len(comps), dtype=torch.float64)
        # candidates are never reused: the scoped table keeps them out of the layers' caches and
        # drops them on exit, so the table does not grow with every search step
        with self.state.candidates() as register:
            for c, (comp, exs) in enumerate(zip(comps, examples)):
                cid = register(comp)
                for ex in exs:
                    rows.append((c, cid, *self.encode(ex, objective)))
            step = max(1, self.sm.rows_per_batch)
            for start in range(0, len(rows), step):
                chunk = rows[start : start + step]
                for (c, _, _, cont), loss in zip(chunk, self._forward(chunk)):
                    nll[c] += loss
                    ntok[c] += len(cont)
        mean = nll / ntok.clamp(min=1)
        if objective == "lorahub":
            mean = mean / torch.tensor([max(1, len(exs)) for exs in examples], dtype=torch.float64)
        return mean.tolist()

    def plain_head(self) -> bool:
        """Whether the model's logits are exactly its output embedding applied to the last hidden
        state (checked once on a probe input): then the vocabulary projection runs on the target
        positions only and no [rows, tokens, vocab] tensor is built. Soft-capped, scaled or
        otherwise post-processed heads fail the check and keep the full forward."""
        if self._plain_head is None:
            self._plain_head = False
            model = self.sm.model
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            inner = getattr(model, "base_model", None)
            if head is not None and inner is not None and inner is not model:
                probe = torch.tensor([[self.sm.pad_id or 0, self.sm.eos_id or 0, 1, 2]], device=self.sm.device)
                mask = torch.ones_like(probe)
                try:
                    with torch.no_grad():
                        full = model(input_ids=probe, attention_mask=mask).logits
                        mine = head(inner(input_ids=probe, attention_mask=mask).last_hidden_state)
                    self._plain_head = full.shape == mine.shape and torch.allclose(full.float(), mine.float(), atol=1e-5, rtol=1e-4)
                except (AttributeError, TypeError, RuntimeError):
                    self._plain_head = False
        return self._plain_head

    def _target_logits(self, inp, mask, spans) -> torch.Tensor:
        """Logits at the positions that predict each row's target tokens, concatenated."""
        model = self.sm.model
        if self.plain_head():
            hidden = model.base_model(input_ids=inp, attention_mask=mask).last_hidden_state
            picked = torch.cat([hidden[i, a:b] for i, a, b in spans])
            return model.get_output_embeddings()(picked)
        logits = model(input_ids=inp, attention_mask=mask).logits
        return torch.cat([logits[i, a:b] for i, a, b in spans])

    def _forward(self, chunk) -> list[float]:
        with self.state.rows([cid for _, cid, _, _ in chunk]):
            return self._forward_rows(chunk)

    def _forward_rows(self, chunk) -> list[float]:
        sm = self.sm
        device = sm.device
        pad = sm.pad_id or 0
        max_len = sm.max_length
        if sm.backend == "causal":
            seqs = [(ctx + cont)[-(max_len + 1):][:-1] for _, _, ctx, cont in chunk]
            width = max(len(s) for s in seqs)
            inp = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(inp)
            for i, s in enumerate(seqs):
                inp[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            spans = [(i, len(s) - len(cont), len(s)) for i, (s, (_, _, _, cont)) in enumerate(zip(seqs, chunk))]
            logits = self._target_logits(inp.to(device), mask.to(device), spans)
            out, pos = [], 0
            for _, _, _, cont in chunk:
                lp = F.log_softmax(logits[pos : pos + len(cont)].float(), dim=-1)
                out.append(-float(lp.gather(1, torch.tensor(cont, device=device)[:, None]).sum()))
                pos += len(cont)
            return out
        ctxs = [ctx[-max_len:] for _, _, ctx, _ in chunk]
        conts = [cont[-max_len:] for _, _, _, cont in chunk]
        enc = torch.full((len(ctxs), max(map(len, ctxs))), pad, dtype=torch.long)
        enc_mask = torch.zeros_like(enc)
        labels = torch.full((len(conts), max(map(len, conts))), -100, dtype=torch.long)
        for i, (c, t) in enumerate(zip(ctxs, conts)):
            enc[i, : len(c)] = torch.tensor(c)
            enc_mask[i, : len(c)] = 1
            labels[i, : len(t)] = torch.tensor(t)
        logits = sm.model(input_ids=enc.to(device), attention_mask=enc_mask.to(device), labels=labels.to(device)).logits.float()
        lp = F.log_softmax(logits, dim=-1)
        out = []
        for i, t in enumerate(conts):
            out.append(-float(lp[i, : len(t)].gather(1, torch.tensor(t, device=device)[:, None]).sum()))
        return out
