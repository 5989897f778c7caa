"""Per-row LoRA composition: every batch row may carry its own weighted mix of the library.

- `table`: `Composition` (sparse weights over the library) and `CompositionState` (the registered
  compositions and, for the forward in flight, each row's composition id).
- `layer`: `ComposedLoraLinear`, the wrapped module, and `inject`, which wraps a model in place.
- `modes`: the mixing modes, one class each ("param", "output", "arrow") behind one protocol
  (`MixingMode`), registered by name (`register_mode`); the layer never branches on a mode name.
- `mixers`: the math the modes compute with.
"""

from ilora_eval.composition.table import BASE, MODES, Composition, CompositionState, RowPlan
from ilora_eval.composition.layer import ComposedLoraLinear, composed_modules, inject, placement
from ilora_eval.composition.modes import MixingMode, get_mode, mode_names, register_mode

__all__ = ["BASE", "MODES", "Composition", "CompositionState", "RowPlan", "ComposedLoraLinear", "composed_modules",
           "inject", "placement", "MixingMode", "get_mode", "mode_names", "register_mode"]
