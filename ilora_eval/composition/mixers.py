"""The per-row mixing math of the three composition modes, on one module's stacked factors
A [N, r, d_in] and B [N, d_out, r] (scaling folded into B). The layer decides which rows use which
composition and caches; these functions only compute.

- "param" (LoraHub, exact): A_c = Σ w_i A_i, B_c = Σ w_i B_i, delta = B_c A_c x.
- "output" (mixture): delta = Σ w_i B_i A_i x, as one rank k·r product over each row's adapters.
- "arrow" (Ostapenko et al. 2024, training-free): per token, the composition's adapters are scored
  by |<v_i, x_t>| with v_i the top right singular vector of B_i A_i; the top `k` are mixed with
  softmax(score / temperature) weights in output space.
"""

from __future__ import annotations

import torch

from ilora_eval.composition.table import Composition, RowPlan


def compose_factors(A: torch.Tensor, B: torch.Tensor, comp: Composition) -> tuple[torch.Tensor, torch.Tensor]:
    """"param": one composition's A_c [r, d_in] and B_c [d_out, r], summed in float32 (the
    library's dtype may be half) from only the composition's non-zero adapters."""
    if comp.is_base:
        r, d_in = A.shape[1:]
        return A.new_zeros(r, d_in), B.new_zeros(B.shape[1], r)
    idx = torch.tensor(comp.indices, device=A.device)
    w = torch.tensor(comp.weights, device=A.device, dtype=torch.float32)
    A_c = torch.einsum("n,nrd->rd", w, A.index_select(0, idx).float())
    B_c = torch.einsum("n,nor->or", w, B.index_select(0, idx).float())
    return A_c.to(A.dtype), B_c.to(B.dtype)


def param_apply(x3: torch.Tensor, y: torch.Tensor, At: torch.Tensor, Bt: torch.Tensor) -> torch.Tensor | None:
    """"param": adds B_c A_c x to `y` in place and returns None where it can (no second
    output-sized tensor per module), else returns the delta [b, t, d_out]. At/Bt are one shared
    pair [d_in, r] / [r, d_out] or per-row stacks [b, d_in, r] / [b, r, d_out]."""
    h = torch.matmul(x3.to(At.dtype), At)  # [b, t, r]
    y3 = y if y.dim() == 3 else y.unsqueeze(1)
    if y3.dtype == Bt.dtype and y3.device == Bt.device and y3.is_contiguous() and not torch.is_grad_enabled():
        if Bt.dim() == 2:
            y3.view(-1, y3.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), Bt)
        else:
            y3.baddbmm_(h, Bt)
        return None
    return torch.matmul(h, Bt)


def output_mix(x3: torch.Tensor, A: torch.Tensor, B: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """"output": rows' adapters idx [b, k] with weights w [b, k] (zero-padded), as one rank k·r product."""
    w = w.to(A.dtype)
    b, k = idx.shape
    r, d_in = A.shape[1:]
    A_rows = A[idx].reshape(b, k * r, d_in)  # [b, k·r, d_in]
    B_rows = B[idx].permute(0, 2, 1, 3).reshape(b, B.shape[1], k * r)
    h = torch.bmm(x3.to(A.dtype), A_rows.transpose(1, 2)) * w.repeat_interleave(r, dim=1).unsqueeze(1)
    return torch.bmm(h, B_rows.transpose(1, 2))


def arrow_prototypes(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """[N, d_in]: each adapter's top right singular vector of B·A (sign is irrelevant)."""
    A32, B32 = A.float(), B.float()
    _, r = torch.linalg.qr(B32)  # B = QR, so B·A = Q·(R·A) shares R·A's right singular vectors
    _, _, vh = torch.linalg.svd(r @ A32, full_matrices=False)
    return vh[:, 0, :].to(A.dtype)


def arrow_mix(x3: torch.Tensor, A: torch.Tensor, B: torch.Tensor, protos: torch.Tensor, plan: RowPlan,
              compositions: list[Composition], k: int, temperature: float) -> torch.Tensor:
    """"arrow": per token, the top `k` of each row's composition adapters by |<v_i, x_t>|."""
    out = torch.zeros(*x3.shape[:2], B.shape[1], dtype=A.dtype, device=x3.device)
    for pos, cid in enumerate(plan.uniq):
        comp = compositions[cid]
        if comp.is_base:
            continue
        rows = (plan.inverse == pos).nonzero().squeeze(1)
        idx = torch.tensor(comp.indices, device=x3.device)
        x = x3[rows].to(A.dtype)  # [b, t, d_in]
        scores = (x @ protos[idx].T).abs()  # [b, t, n]
        top, which = scores.topk(min(k, len(comp.indices)), dim=-1)
        w = torch.zeros_like(scores).scatter(-1, which, torch.softmax(top / temperature, dim=-1))
        h = torch.einsum("btd,nrd->btnr", x, A[idx]) * w.unsqueeze(-1)
        out[rows] = torch.einsum("btnr,nor->bto", h, B[idx])
    return out
