"""The composed layer: `ComposedLoraLinear` wraps a base `nn.Linear` (or GPT-2 `Conv1D`) and holds
that module's library stacked as A [N, r, d_in] and B [N, d_out, r] (scaling folded into B);
`inject` puts one in place of every library target module, where the module's weights live and in
the dtype it computes in. The shared `CompositionState` says which composition each row uses; the
mixing math is in `mixers`.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from ilora_eval.composition import mixers
from ilora_eval.composition.table import BASE, CompositionState, RowPlan
from ilora_eval.errors import IloraError


class ComposedLoraLinear(nn.Module):
    def __init__(self, base: nn.Module, A: torch.Tensor, B: torch.Tensor, state: CompositionState):
        super().__init__()
        self.base = base
        self.register_buffer("lora_A", A, persistent=False)  # [N, r, d_in]
        self.register_buffer("lora_B", B, persistent=False)  # [N, d_out, r]
        self.state = state
        # "param": composed factors per composition id, LRU, while a composition repeats
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._prototypes: torch.Tensor | None = None

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
            delta = mixers.arrow_mix(x3, self.lora_A, self.lora_B, self.arrow_prototypes(), plan,
                                     self.state.compositions, self.state.arrow_k, self.state.arrow_temperature)
        elif self.state.mode == "output":
            delta = mixers.output_mix(x3, self.lora_A, self.lora_B, plan.out_idx, plan.out_w)
        else:
            delta = mixers.param_apply(x3, y, *self._row_factors(plan))
            if delta is None:  # added to y in place
                return y
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
        out = mixers.compose_factors(self.lora_A, self.lora_B, self.state.compositions[cid])
        transient = self.state.transient_from is not None and cid >= self.state.transient_from
        if not transient:
            self._cache[cid] = out
            while len(self._cache) > self.state.cache_size:
                self._cache.popitem(last=False)
        return out

    def arrow_prototypes(self) -> torch.Tensor:
        if self._prototypes is None:
            self._prototypes = mixers.arrow_prototypes(self.lora_A, self.lora_B)
        return self._prototypes

    def clear_cache(self) -> None:
        self._cache.clear()


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
