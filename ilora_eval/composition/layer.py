"""The composed layer: `ComposedLoraLinear` wraps a base `nn.Linear` (or GPT-2 `Conv1D`) and holds
that module's library stacked as A [N, r, d_in] and B [N, d_out, r] (scaling folded into B);
`inject` puts one in place of every library target module, where the module's weights live and in
the dtype it computes in. The shared `CompositionState` says which composition each row uses and which
mixing mode (a class in `modes`) computes the delta; the math is in `mixers`.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from ilora_eval.composition import mixers, modes  # noqa: F401 (modes: the built-in modes registered)
from ilora_eval.composition.table import BASE, Composition, CompositionState, RowPlan
from ilora_eval.errors import IloraError


# where the library's factors live: "lazy" (the adapters stay on the host; those the compositions
# use are copied to the device on first use, LRU-bounded by CompositionState.adapter_cache) or "all"
# (the whole stack on the device, as before: tests compare the two)
RESIDENCIES = ("lazy", "all")
RESIDENT = "lazy"


class ComposedLoraLinear(nn.Module):
    def __init__(self, base: nn.Module, A: torch.Tensor, B: torch.Tensor, state: CompositionState, source=None):
        """`A` [n, r, d_in], `B` [n, d_out, r]: the factors on the device. Without `source` they are
        the whole library (slot = library index); with `source` (the library's host-side
        `StackedModule`) they start empty and hold the adapters in `state.slots`, copied in as
        compositions first use them."""
        super().__init__()
        self.base = base
        self.register_buffer("factors_A", A, persistent=False)
        self.register_buffer("factors_B", B, persistent=False)
        self.state = state
        self.source = source
        self._loaded: dict[int, int] = {}  # slot -> generation of the adapter this module holds there
        # "param": composed factors per composition id, LRU, while a composition repeats
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._prototypes: torch.Tensor | None = None

    # the whole library on this module's device (tools and tests; the forward pass reads `factors_*`)
    @property
    def lora_A(self) -> torch.Tensor:
        if self.source is None:
            return self.factors_A
        return self.source.A.to(self.factors_A.device, self.factors_A.dtype)

    @property
    def lora_B(self) -> torch.Tensor:
        if self.source is None:
            return self.factors_B
        return self.source.B.to(self.factors_B.device, self.factors_B.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.base(x, *args, **kwargs)
        if self.state.row_ids is None:
            return y
        if x.device != self.factors_A.device:
            # an accelerate hook on the base layer may have moved its input: compose where the factors live
            x = x.to(self.factors_A.device)
        plan = self.state.plan(x.shape[0], x.device)  # rows checked against the batch once per forward
        if plan.uniq == [BASE]:
            return y
        x3 = x if x.dim() == 3 else x.unsqueeze(1)
        delta = self.state.mixing.delta(self, x3, y, plan)  # the mode class (modes.py) computes
        if delta is None:  # added to y in place
            return y
        delta = delta if x.dim() == 3 else delta.squeeze(1)
        return y + delta.to(device=y.device, dtype=y.dtype)

    # ------------------------------------------------------------ residency of library adapters
    def _resident(self, adapters) -> list[int]:
        """The slot of each of `adapters` (library indices), copying in those this module lacks."""
        if self.source is None:
            return [int(a) for a in adapters]
        table = self.state.slots
        table.ensure(adapters)
        slots = table.lookup(adapters)
        self._fill(set(slots))
        return slots

    def _fill(self, wanted: set[int]) -> None:
        """Sizes the factors to the slot table and copies in the `wanted` slots this module holds
        an older adapter in (slots not asked for are refreshed when asked for)."""
        table = self.state.slots
        n, A, B = len(table), self.factors_A, self.factors_B
        if A.shape[0] != n:
            # exactly the slots in use: device bytes follow the adapters the run uses
            keep = min(A.shape[0], n) if n > A.shape[0] else 0  # a shrink reassigned every slot
            A2, B2 = A.new_zeros(n, *A.shape[1:]), B.new_zeros(n, *B.shape[1:])
            A2[:keep], B2[:keep] = A[:keep], B[:keep]
            self.factors_A, self.factors_B = A2, B2
            if self._prototypes is not None:
                P2 = self._prototypes.new_zeros(n, self._prototypes.shape[1])
                P2[:keep] = self._prototypes[:keep]
                self._prototypes = P2
            if not keep:
                self._loaded = {}
        stale = sorted(s for s in wanted if self._loaded.get(s) != table.generation[s])
        if not stale:
            return
        rows_A, rows_B = self.source.rows([table.owner[s] for s in stale])
        idx = torch.tensor(stale, dtype=torch.long, device=self.factors_A.device)
        rows_A = rows_A.to(self.factors_A.device, self.factors_A.dtype)
        rows_B = rows_B.to(self.factors_B.device, self.factors_B.dtype)
        self.factors_A.index_copy_(0, idx, rows_A)
        self.factors_B.index_copy_(0, idx, rows_B)
        if self._prototypes is not None:
            self._prototypes.index_copy_(0, idx, mixers.arrow_prototypes(rows_A, rows_B))
        for s in stale:
            self._loaded[s] = table.generation[s]

    def _slot_compositions(self, plan: RowPlan) -> dict[int, Composition] | list[Composition]:
        """The plan's compositions over slots instead of library indices."""
        comps = self.state.compositions
        if self.source is None:
            return comps
        used = [comps[c] for c in plan.uniq]
        self._resident([i for c in used for i in c.indices])
        table = self.state.slots
        return {c: Composition(tuple(table.lookup(comp.indices)), comp.weights) for c, comp in zip(plan.uniq, used)}

    def _output_idx(self, plan: RowPlan) -> torch.Tensor:
        """"output": the rows' adapters [b, k] as slots (padding: slot 0, with weight 0)."""
        if self.source is None:
            return plan.out_idx
        comps = [self.state.compositions[c] for c in plan.cids]
        self._resident([i for c in comps for i in c.indices])
        table, key = self.state.slots, str(plan.out_idx.device)
        hit = plan.slot_idx.get(key)
        if hit is None or hit[0] != table.tick:
            idx = torch.zeros(plan.out_idx.shape, dtype=torch.long)
            for b, c in enumerate(comps):
                if c.indices:
                    idx[b, : len(c.indices)] = torch.tensor(table.lookup(c.indices), dtype=torch.long)
            hit = plan.slot_idx[key] = (table.tick, idx.to(plan.out_idx.device))
        return hit[1]

    # ------------------------------------------------------------ "param"
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
        if self.source is not None and not comp.is_base:
            comp = Composition(tuple(self._resident(comp.indices)), comp.weights)
        out = mixers.compose_factors(self.factors_A, self.factors_B, comp)
        transient = self.state.transient_from is not None and cid >= self.state.transient_from
        if not transient:
            self._cache[cid] = out
            while len(self._cache) > self.state.cache_size:
                self._cache.popitem(last=False)
        return out

    def arrow_prototypes(self) -> torch.Tensor:
        """[slots, d_in]: each resident adapter's top right singular vector of B·A."""
        if self._prototypes is None:
            self._prototypes = mixers.arrow_prototypes(self.factors_A, self.factors_B)
        return self._prototypes

    def clear_cache(self) -> None:
        self._cache.clear()

    def device_bytes(self) -> int:
        """Bytes this module holds on its device for the library: resident adapters, composed
        factors, Arrow prototypes."""
        ts = [self.factors_A, self.factors_B, *(t for f in self._cache.values() for t in f)]
        if self._prototypes is not None:
            ts.append(self._prototypes)
        return sum(t.numel() * t.element_size() for t in ts)


def inject(model: nn.Module, library, state: CompositionState, *, resident: str | None = None) -> list[str]:
    """Replace every library target module of `model` by a ComposedLoraLinear, in place.
    `resident`: "lazy" (default, `RESIDENT`) or "all" (see RESIDENCIES)."""
    resident = resident or RESIDENT
    if resident not in RESIDENCIES:
        raise IloraError(f"resident={resident!r} is unknown; choose one of {', '.join(RESIDENCIES)}")
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
        (r, a_in), (b_out, _) = stacked.shape_A, stacked.shape_B
        if a_in != d_in or b_out != d_out:
            raise IloraError(f"adapter shapes for {path} ({b_out}x{a_in}) do not match the "
                             f"base model's module ({d_out}x{d_in}); the adapters were trained on another base model")
        parent_name, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if resident == "all":
            A, B = stacked.rows(range(stacked.n))
            layer = ComposedLoraLinear(module, A.to(device, dtype), B.to(device, dtype), state)
        else:
            layer = ComposedLoraLinear(module, torch.zeros(0, r, d_in, device=device, dtype=dtype),
                                       torch.zeros(0, d_out, r, device=device, dtype=dtype), state, source=stacked)
        setattr(parent, child, layer)
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
