"""Strategy registry: one config dataclass per strategy, built from lm-eval model_args."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from ilora_eval.errors import IloraError

STRATEGIES: dict[str, type] = {}


@dataclass
class StrategyConfig:
    """Arguments common to every strategy."""

    seed: int = 1


def register_strategy(name: str):
    def deco(cls):
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return deco


def strategy_class(name: str):
    _load_builtin()
    try:
        return STRATEGIES[name]
    except KeyError:
        raise IloraError(f"strategy={name!r} is unknown; choose one of {', '.join(sorted(STRATEGIES))}") from None


def build_config(name: str, args: dict) -> StrategyConfig:
    """Pops the strategy's own arguments out of `args` (the remaining ones belong to HFLM)."""
    cls = strategy_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    hints = typing.get_type_hints(cls.Config)
    values = {}
    for key in list(args):
        if key in fields:
            values[key] = _coerce(name, key, args.pop(key), hints[key])
    cfg = cls.Config(**values)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def strategy_arg_names() -> set[str]:
    _load_builtin()
    return {f.name for cls in STRATEGIES.values() for f in dataclasses.fields(cls.Config)}


def _coerce(strategy: str, key: str, value, hint):
    target = next((t for t in typing.get_args(hint) if t is not type(None)), hint) if typing.get_origin(hint) else hint
    if value is None or isinstance(value, target) and not (target is int and isinstance(value, bool)):
        return value
    try:
        if target is bool:
            if str(value).lower() in ("1", "true", "yes"):
                return True
            if str(value).lower() in ("0", "false", "no"):
                return False
            raise ValueError
        return target(value)
    except (TypeError, ValueError):
        raise IloraError(f"{key}={value!r} is not a valid {target.__name__} for strategy={strategy}") from None


def _load_builtin() -> None:
    if not STRATEGIES:
        from ilora_eval.strategies import arrow, ilora, lorahub, retrieve_fuse, simple  # noqa: F401
