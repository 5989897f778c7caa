"""Per-row LoRA composition: every batch row may carry its own weighted mix of the library.

`ComposedLoraLinear` wraps a base `nn.Linear` (or GPT-2 `Conv1D`) and holds that module's
library stacked as A [N, r, d_in] and B [N, d_out, r] (scaling folded into B). A shared
`CompositionState` says, for the forward pass in flight, which registered composition each row
uses. Two modes:
- "param" (LoraHub, exact): A_c = Σ w_i A_i, B_c = Σ w_i B_i, delta = B_c A_c x. Composed factors
  are cached per composition while it repeats; only the composition's non-zero adapters are read.
- "output" (mixture): delta = Σ w_i B_i A_i x, as one rank k·r product over each row's adapters.
- "arrow" (Ostapenko et al. 2024, training-free): per token, the composition's adapters are
  scored by |<v_i, x_t>| with v_i the top right singular vector of B_i A_i; the top `arrow_k`
  are mixed with softmax(score / arrow_temperature) weights in output space.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from ilora_eval.errors import IloraError

BASE = 0  # composition id of "no adapter"
MODES = ("param", "output", "arrow")


@dataclass(frozen=True)
class Composition:
    """Sparse weights over library adapters (indices into the library order)."""

    indices: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def of(cls, indices, weights) -> "Composition":
        pairs = [(int(i), float(w)) for i, w in zip(indices, weights) if float(w) != 0.0]
        if not pairs:
            return cls((), ())
        i, w = zip(*pairs)
        return cls(tuple(i), tuple(w))

    @property
    def is_base(self) -> bool:
        return not self.indices


@dataclass
class CompositionState:
    """Shared by all wrapped modules of one model."""

    mode: str = "param"
    cache_size: int = 256
    compositions: list[Composition] = field(default_factory=lambda: [Composition((), ())])
    ids: dict[Composition, int] = field(default_factory=dict)
    rows: torch.Tensor | None = None  # [batch] composition ids for the forward in flight
    transient_from: int | None = None  # ids >= this are search candidates: never cached
    arrow_k: int = 3
    arrow_temperature: float = 1.0
    _plans: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise IloraError(f"composition={self.mode!r} is unknown; choose one of {', '.join(MODES)}")
        self.ids[self.compositions[0]] = BASE

    def set_rows(self, rows) -> None:
        """Composition id per batch row for the next forward passes (None: base model)."""
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
        self._plans = {}

    def plan(self, batch: int, device) -> "RowPlan":
        """Computed once per forward (not once per module): which compositions, which row uses which."""
        key = (batch, str(device))
        plan = self._plans.get(key)
        if plan is None:
            rows = _match_rows(self.rows, batch)
            uniq, inverse = torch.unique(rows, return_inverse=True)
            plan = RowPlan(uniq.tolist(), inverse.to(device), None, None)
            if self.mode == "output":
                comps = [self.compositions[c] for c in rows.tolist()]
                k = max(1, max(len(c.indices) for c in comps))
                idx = torch.zeros(batch, k, dtype=torch.long)
                w = torch.zeros(batch, k, dtype=torch.float32)
                for b, c in enumerate(comps):
                    idx[b, : len(c.indices)] = torch.tensor(c.indices, dtype=torch.long)
                    w[b, : len(c.indices)] = torch.tensor(c.weights, dtype=torch.float32)
                plan = RowPlan(plan.uniq, plan.inverse, idx.to(device), w.to(device))
            self._plans[key] = plan
        return plan

    def register(self, comp: Composition) -> int:
        if comp.is_base:
            return BASE
        cid = self.ids.get(comp)
        if cid is None:
            cid = len(self.compositions)
            self.compositions.append(comp)
            self.ids[comp] = cid
        return cid


@dataclass
class RowPlan:
    uniq: list[int]
    inverse: torch.Tensor
    out_idx: torch.Tensor | None  # output mode: [batch, k] adapter indices
    out_w: torch.Tensor | None  # output mode: [batch, k] weights
    # per module: its per-row factors, gathered once and reused by every decoding step
    row_factors: dict = field(default_factory=dict)


class ComposedLoraLinear(nn.Module):
    def __init__(self, base: nn.Module, A: torch.Tensor, B: torch.Tensor, state: CompositionState):
        super().__init__()
        self.base = base
        self.register_buffer("lora_A", A, persistent=False)  # [N, r, d_in]
        self.register_buffer("lora_B", B, persistent=False)  # [N, d_out, r]
        self.state = state
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.base(x, *args, **kwargs)
        if self.state.rows is None:
            return y
        if x.device != self.lora_A.device:
            # an accelerate hook on the base layer may have moved its input: compose where the factors live
            x = x.to(self.lora_A.device)
        plan = self.state.plan(x.shape[0], x.device)
        if plan.uniq == [BASE]:
            return y
        x3 = x if x.dim() == 3 else x.unsqueeze(1)
        if self.state.mode == "arrow":
            delta = self._arrow(x3, plan)
        elif self.state.mode == "output":
            delta = self._output_mix(x3, plan)
        else:
            At, Bt = self._row_factors(plan)
            h = torch.matmul(x3.to(At.dtype), At)  # [b, t, r]
            y3 = y if y.dim() == 3 else y.unsqueeze(1)
            if y3.dtype == Bt.dtype and y3.device == Bt.device and y3.is_contiguous() and not torch.is_grad_enabled():
                # in place: no second output-sized tensor per module
                if Bt.dim() == 2:
                    y3.view(-1, y3.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), Bt)
                else:
                    y3.baddbmm_(h, Bt)
                return y
            delta = torch.matmul(h, Bt)
        delta = delta if x.dim() == 3 else delta.squeeze(1)
        return y + delta.to(device=y.device, dtype=y.dtype)

    def _row_factors(self, plan: RowPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Aᵀ [d_in, r] and Bᵀ [r, d_out] when the batch shares one composition, else per-row
        stacks [b, d_in, r] and [b, r, d_out]."""
        key = id(self)
        hit = plan.row_factors.get(key)
        if hit is None:
            if len(plan.uniq) == 1:
                A, B = self._composed(plan.uniq[0])
                hit = (A.T, B.T)
            else:
                factors = [self._composed(c) for c in plan.uniq]
                hit = (torch.stack([f[0] for f in factors])[plan.inverse].transpose(1, 2),
                       torch.stack([f[1] for f in factors])[plan.inverse].transpose(1, 2))
            plan.row_factors[key] = hit
        return hit

    def _composed(self, cid: int) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._cache.get(cid)
        if hit is not None:
            self._cache.move_to_end(cid)
            return hit
        comp = self.state.compositions[cid]
        if comp.is_base:
            r, d_in = self.lora_A.shape[1:]
            out = (self.lora_A.new_zeros(r, d_in), self.lora_B.new_zeros(self.lora_B.shape[1], r))
        else:
            idx = torch.tensor(comp.indices, device=self.lora_A.device)
            w = torch.tensor(comp.weights, device=self.lora_A.device, dtype=torch.float32)
            A = torch.einsum("n,nrd->rd", w, self.lora_A.index_select(0, idx).float())
            B = torch.einsum("n,nor->or", w, self.lora_B.index_select(0, idx).float())
            out = (A.to(self.lora_A.dtype), B.to(self.lora_B.dtype))
        transient = self.state.transient_from is not None and cid >= self.state.transient_from
        if not transient:
            self._cache[cid] = out
            while len(self._cache) > self.state.cache_size:
                self._cache.popitem(last=False)
        return out

    def _output_mix(self, x3: torch.Tensor, plan: RowPlan) -> torch.Tensor:
        idx, w = plan.out_idx, plan.out_w.to(self.lora_A.dtype)
        b, k = idx.shape
        n, r, d_in = self.lora_A.shape
        A = self.lora_A[idx].reshape(b, k * r, d_in)  # [b, k·r, d_in]
        B = self.lora_B[idx].permute(0, 2, 1, 3).reshape(b, self.lora_B.shape[1], k * r)
        h = torch.bmm(x3.to(A.dtype), A.transpose(1, 2)) * w.repeat_interleave(r, dim=1).unsqueeze(1)
        return torch.bmm(h, B.transpose(1, 2))

    def arrow_prototypes(self) -> torch.Tensor:
        """[N, d_in]: each adapter's top right singular vector of B·A (sign is irrelevant)."""
        if getattr(self, "_prototypes", None) is None:
            A, B = self.lora_A.float(), self.lora_B.float()
            q, r = torch.linalg.qr(B)  # B = QR, so B·A = Q·(R·A) shares R·A's right singular vectors
            _, _, vh = torch.linalg.svd(r @ A, full_matrices=False)
            self._prototypes = vh[:, 0, :].to(self.lora_A.dtype)
        return self._prototypes

    def _arrow(self, x3: torch.Tensor, plan: RowPlan) -> torch.Tensor:
        out = torch.zeros(*x3.shape[:2], self.lora_B.shape[1], dtype=self.lora_A.dtype, device=x3.device)
        protos = self.arrow_prototypes()
        for pos, cid in enumerate(plan.uniq):
            comp = self.state.compositions[cid]
            if comp.is_base:
                continue
            rows = (plan.inverse == pos).nonzero().squeeze(1)
            idx = torch.tensor(comp.indices, device=x3.device)
            x = x3[rows].to(self.lora_A.dtype)  # [b, t, d_in]
            scores = (x @ protos[idx].T).abs()  # [b, t, n]
            k = min(self.state.arrow_k, len(comp.indices))
            top, which = scores.topk(k, dim=-1)
            w = torch.zeros_like(scores).scatter(-1, which, torch.softmax(top / self.state.arrow_temperature, dim=-1))
            A, B = self.lora_A[idx], self.lora_B[idx]  # [n, r, d_in], [n, d_out, r]
            h = torch.einsum("btd,nrd->btnr", x, A) * w.unsqueeze(-1)
            out[rows] = torch.einsum("btnr,nor->bto", h, B)
        return out

    def clear_cache(self) -> None:
        self._cache.clear()


def _match_rows(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Generation expands rows (beams, sampled returns): repeat each row's id accordingly."""
    if rows.numel() == batch:
        return rows
    if batch % rows.numel() == 0:
        return rows.repeat_interleave(batch // rows.numel())
    raise IloraError(f"internal: batch of {batch} rows does not match {rows.numel()} composition ids")


def inject(model: nn.Module, library, state: CompositionState) -> list[str]:
    """Replace every library target module of `model` by a ComposedLoraLinear, in place."""
    names = dict(model.named_modules())
    wrapped = []
    for path, stacked in library.modules.items():
        module = names.get(path)
        if module is None:
            alt = [n for n in names if n.endswith("." + path) or path.endswith("." + n)]
            module = names.get(alt[0]) if len(alt) == 1 else None
            path = alt[0] if module is not None else path
        if module is None:
            raise IloraError(f"library module {path!r} does not exist in the base model; the adapters were trained on another architecture")
        if isinstance(module, ComposedLoraLinear):
            raise IloraError(f"module {path} is already composed; inject the library once")
        device, dtype = placement(model, names, module, path)
        d_in, d_out = _features(module, path)
        if stacked.A.shape[2] != d_in or stacked.B.shape[1] != d_out:
            raise IloraError(f"adapter shapes for {path} ({stacked.B.shape[1]}x{stacked.A.shape[2]}) do not match the "
                             f"base model's module ({d_out}x{d_in}); the adapters were trained on another base model")
        parent_name, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ComposedLoraLinear(module, stacked.A.to(device, dtype), stacked.B.to(device, dtype), state))
        wrapped.append(path)
    return wrapped


# bitsandbytes layers subclass nn.Linear and compute in a floating dtype: the factors live in that dtype
BNB_LAYERS = ("Linear8bitLt", "Linear4bit")
# GPTQ / AWQ / HQQ / EETQ kernels: packed integer weights behind their own forward
QUANTIZED_NAME = re.compile(r"QuantLinear|WQLinear|HQQLinear|EetqLinear|FP8Linear")


def placement(model: nn.Module, names: dict, module: nn.Module, path: str) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of one module's stacked factors: its own weight's device (each module's
    under device_map / parallelize=True; the accelerate hook's execution device when the weight
    is offloaded) and its compute dtype (a quantized weight's dtype is storage, not compute)."""
    cls = type(module).__name__
    weight = getattr(module, "weight", None)
    if cls in BNB_LAYERS and isinstance(module, nn.Linear):
        dtype = getattr(module, "compute_dtype", None) or _float_dtype(model)
    elif QUANTIZED_NAME.search(cls) or weight is None or not weight.dtype.is_floating_point:
        raise IloraError(f"{path} is a quantized layer ({cls}, weight dtype {getattr(weight, 'dtype', None)}) the "
                         "composition cannot add LoRA factors to; load the base model unquantized (dtype=float16/bfloat16) "
                         "or with bitsandbytes (load_in_8bit=True / load_in_4bit=True)")
    else:
        dtype = weight.dtype
    device = weight.device
    if device.type == "meta":
        device = _execution_device(names, path)
        if device is None:
            raise IloraError(f"{path} has no loaded weights (meta device, no accelerate offload hook); load the model "
                             "fully before composing (drop device_map entries that leave modules unloaded)")
    return device, dtype


def _execution_device(names: dict, path: str) -> torch.device | None:
    """Offloaded modules (device_map with "disk"/"cpu" offload) keep meta weights; accelerate's
    hook on the module or an ancestor says where they compute."""
    parts = path.split(".")
    for k in range(len(parts), -1, -1):
        hook = getattr(names.get(".".join(parts[:k])), "_hf_hook", None)
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    return None


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model computes in: that of its first floating-point parameter."""
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


def _features(module: nn.Module, path: str) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2: weight is [d_in, d_out]
        return module.weight.shape[0], module.weight.shape[1]
    raise IloraError(f"LoRA on {path} ({type(module).__name__}) is not supported; only Linear and Conv1D targets can be composed")


def composed_modules(model: nn.Module) -> list[ComposedLoraLinear]:
    return [m for m in model.modules() if isinstance(m, ComposedLoraLinear)]
