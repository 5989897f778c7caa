"""Per-row LoRA composition: every batch row may carry its own weighted mix of the library.

- `table`: `Composition` (sparse weights over the library) and `CompositionState` (the registered
  compositions and, for the forward in flight, each row's composition id).
- `layer`: `ComposedLoraLinear`, the wrapped module, and `inject`, which wraps a model in place.
- `mixers`: the math of the three modes ("param", "output", "arrow").
"""

from ilora_eval.composition.table import BASE, MODES, Composition, CompositionState, RowPlan
from ilora_eval.composition.layer import ComposedLoraLinear, composed_modules, inject, placement

__all__ = ["BASE", "MODES", "Composition", "CompositionState", "RowPlan", "ComposedLoraLinear", "composed_modules",
           "inject", "placement"]
