"""The mixing modes, one class each behind one protocol (as PEFT's `LoraVariant`), registered by name.

A mode answers two questions for the layer, which itself never branches on a mode name:
- `prepare(plan, state, device)`: once per forward (the `RowPlan` is shared by every wrapped
  module), anything the mode precomputes per row (e.g. "output"'s padded adapter/weight tables);
- `delta(layer, x3, y, plan)`: this module's LoRA delta [b, t, d_out] for input x3 [b, t, d_in], or
  None when the mode added it to `y` in place.

The layer's helpers give a mode the factors it needs (`layer._row_factors`, `layer._output_idx`,
`layer._slot_compositions`, `layer.arrow_prototypes`); those handle the device residency of library
adapters and the caches, so a new mode is one class plus `@register_mode`.
"""

from __future__ import annotations

import torch

from ilora_eval.composition import mixers
from ilora_eval.composition.registry import MixingMode, get_mode, mode_names, register_mode  # noqa: F401 (re-exported)


@register_mode
class ParamMode(MixingMode):
    """LoraHub, exact: A_c = Σ w_i A_i, B_c = Σ w_i B_i, delta = B_c A_c x (added to y in place where it can)."""

    name = "param"

    def delta(self, layer, x3, y, plan):
        return mixers.param_apply(x3, y, *layer._row_factors(plan))


@register_mode
class OutputMode(MixingMode):
    """Mixture: delta = Σ w_i B_i A_i x, one rank k·r product over each row's adapters."""

    name = "output"

    def prepare(self, plan, state, device):
        comps = [state.compositions[c] for c in plan.cids]
        k = max(1, max(len(c.indices) for c in comps))
        idx = torch.zeros(len(comps), k, dtype=torch.long)
        w = torch.zeros(len(comps), k, dtype=torch.float32)
        for b, c in enumerate(comps):
            idx[b, : len(c.indices)] = torch.tensor(c.indices, dtype=torch.long)
            w[b, : len(c.indices)] = torch.tensor(c.weights, dtype=torch.float32)
        plan.out_idx, plan.out_w = idx.to(device), w.to(device)

    def delta(self, layer, x3, y, plan):
        idx = layer._output_idx(plan)  # first: it may grow the factors
        return mixers.output_mix(x3, layer.factors_A, layer.factors_B, idx, plan.out_w)


@register_mode
class ArrowMode(MixingMode):
    """Arrow (training-free, per token): the top `state.arrow_k` of a row's adapters by |<v_i, x_t>|."""

    name = "arrow"

    def delta(self, layer, x3, y, plan):
        comps = layer._slot_compositions(plan)  # first: it may grow the factors
        return mixers.arrow_mix(x3, layer.factors_A, layer.factors_B, layer.arrow_prototypes(), plan, comps,
                                layer.state.arrow_k, layer.state.arrow_temperature)
