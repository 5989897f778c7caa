"""The registry of mixing modes and their protocol, apart from the modes themselves, so that the
state (`table.py`) looks a mode up without importing the modes (which import the table)."""

from __future__ import annotations

from typing import ClassVar

from ilora_eval.errors import IloraError

_REGISTRY: dict[str, "MixingMode"] = {}


class MixingMode:
    """Protocol of a mixing mode (subclass it, set `name`, decorate with `@register_mode`)."""

    name: ClassVar[str]

    def prepare(self, plan: "RowPlan", state, device) -> None:
        """Per-forward precomputation, stored on `plan` (default: nothing)."""

    def delta(self, layer, x3: "torch.Tensor", y: "torch.Tensor", plan: "RowPlan") -> "torch.Tensor | None":
        raise NotImplementedError


def register_mode(cls: type[MixingMode]) -> type[MixingMode]:
    """Class decorator: makes `cls.name` a valid `composition=` / `CompositionState(mode=...)`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise IloraError(f"mixing mode {cls.__name__} has no `name`; set the class attribute name = '...'")
    _REGISTRY[name] = cls()
    return cls


def mode_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_mode(name: str) -> MixingMode:
    """The registered mode `name`; an unknown name is a one-line error naming the known ones."""
    mode = _REGISTRY.get(name)
    if mode is None:
        raise IloraError(f"composition={name!r} is unknown; choose one of {', '.join(_REGISTRY)}")
    return mode
