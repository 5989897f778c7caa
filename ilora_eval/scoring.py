"""Cross-entropy of adaptation targets under many compositions, in batched forwards.

Rows are (composition, example) pairs; each row's composition is applied by the per-row layer,
so all candidates of a lock-step search step share forwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ilora_eval.adaptation import Example
from ilora_eval.composition import Composition, CompositionState


class TargetScorer:
    def __init__(self, lm, state: CompositionState, rows_per_batch: int = 64):
        self.lm = lm  # an HFLM: tokenizer, backend, device, max_length, model
        self.state = state
        self.rows_per_batch = rows_per_batch
        self.fast_head = True
        self._enc: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def encode(self, ex: Example) -> tuple[list[int], list[int]]:
        key = (ex.prompt, ex.target)
        if key not in self._enc:
            self._enc[key] = self.lm._encode_pair(ex.prompt, ex.target)
        return self._enc[key]

    @torch.no_grad()
    def __call__(self, comps: list[Composition], examples: list[list[Example]]) -> list[float]:
        first_transient = len(self.state.compositions)
        rows = []  # (candidate, composition id, ctx, cont)
        for c, (comp, exs) in enumerate(zip(comps, examples)):
            cid = self.state.register(comp)
            for ex in exs:
                rows.append((c, cid, *self.encode(ex)))
        nll = torch.zeros(len(comps), dtype=torch.float64)
        ntok = torch.zeros(len(comps), dtype=torch.float64)
        self.state.transient_from = first_transient
        try:
            for start in range(0, len(rows), self.rows_per_batch):
                chunk = rows[start : start + self.rows_per_batch]
                losses = self._forward(chunk)
                for (c, _, _, cont), loss in zip(chunk, losses):
                    nll[c] += loss
                    ntok[c] += len(cont)
        finally:
            self.state.set_rows(None)
            self.state.transient_from = None
            self._forget_transient(first_transient)
        return (nll / ntok.clamp(min=1)).tolist()

    def _forget_transient(self, first: int) -> None:
        # candidates are never reused: drop them so the table does not grow with every search step
        for comp in self.state.compositions[first:]:
            self.state.ids.pop(comp, None)
        del self.state.compositions[first:]

    # architectures whose logits are exactly lm_head(last hidden state): for them the vocabulary
    # projection is applied to the target positions only (a [rows, tokens, vocab] tensor is not built)
    PLAIN_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "opt", "olmo", "phi3"})

    def _target_logits(self, inp, mask, spans) -> torch.Tensor:
        """Logits at the positions that predict each row's target tokens, concatenated."""
        model = self.lm.model
        if getattr(model.config, "model_type", None) in self.PLAIN_HEAD and self.fast_head:
            hidden = model.base_model(input_ids=inp, attention_mask=mask).last_hidden_state
            picked = torch.cat([hidden[i, a:b] for i, a, b in spans])
            return model.get_output_embeddings()(picked)
        logits = model(input_ids=inp, attention_mask=mask).logits
        return torch.cat([logits[i, a:b] for i, a, b in spans])

    def _forward(self, chunk) -> list[float]:
        lm = self.lm
        device = lm.device
        self.state.set_rows([cid for _, cid, _, _ in chunk])
        max_len = lm.max_length
        if lm.backend == "causal":
            seqs = [(ctx + cont)[-(max_len + 1):][:-1] for _, _, ctx, cont in chunk]
            width = max(len(s) for s in seqs)
            inp = torch.full((len(seqs), width), lm.tokenizer.pad_token_id or 0, dtype=torch.long)
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
        enc = torch.full((len(ctxs), max(map(len, ctxs))), lm.tokenizer.pad_token_id or 0, dtype=torch.long)
        enc_mask = torch.zeros_like(enc)
        labels = torch.full((len(conts), max(map(len, conts))), -100, dtype=torch.long)
        for i, (c, t) in enumerate(zip(ctxs, conts)):
            enc[i, : len(c)] = torch.tensor(c)
            enc_mask[i, : len(c)] = 1
            labels[i, : len(t)] = torch.tensor(t)
        logits = lm.model(input_ids=enc.to(device), attention_mask=enc_mask.to(device), labels=labels.to(device)).logits.float()
        lp = F.log_softmax(logits, dim=-1)
        out = []
        for i, t in enumerate(conts):
            out.append(-float(lp[i, : len(t)].gather(1, torch.tensor(t, device=device)[:, None]).sum()))
        return out
