"""`--model ilora`'s arguments, checked before HFLM loads anything (a typo costs no model load)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ilora_eval.composition import CompositionState
from ilora_eval.errors import IloraError
from ilora_eval.strategies import StrategyConfig, build_config, strategy_arg_names, strategy_class

# HFLM passes unknown keyword arguments to from_pretrained; these are the ones we let through.
FROM_PRETRAINED_KWARGS = {
    "attn_implementation", "low_cpu_mem_usage", "device_map", "quantization_config", "load_in_8bit",
    "load_in_4bit", "cache_dir", "token", "local_files_only", "use_safetensors", "torch_dtype",
}


@dataclass
class CheckedArgs:
    config: StrategyConfig  # the strategy's own arguments
    mode: str  # the composition layer's mode
    forced: bool  # the strategy chose the mode (arrow: then its arguments configure the layer)
    hflm: dict  # everything else, for HFLM

    def composition_state(self) -> CompositionState:
        state = CompositionState(mode=self.mode)
        if self.forced and self.mode == "arrow":
            state.arrow_k, state.arrow_temperature = self.config.arrow_k, self.config.arrow_temperature
        return state


def check_model_args(strategy: str, library, composition: str, kwargs: dict, hflm_args: set[str]) -> CheckedArgs:
    """Splits `kwargs` into the strategy's arguments and HFLM's (`hflm_args`, plus the
    from_pretrained ones let through); anything else is an error."""
    kwargs = dict(kwargs)
    own = {k: kwargs.pop(k) for k in list(kwargs) if k in strategy_arg_names()}
    config = build_config(strategy, own)
    check_strategy_args(strategy, config, own)
    unknown = sorted(k for k in kwargs if k not in hflm_args and k not in FROM_PRETRAINED_KWARGS)
    if unknown:
        raise IloraError(f"unknown model argument(s) {', '.join(unknown)} for --model ilora; see the README's "
                         "model_args table (strategy arguments go with their strategy)")
    if kwargs.get("peft") or kwargs.get("delta"):
        raise IloraError("peft=/delta= cannot be combined with --model ilora; put the adapter in a library folder "
                         "and use strategy=single_best/uniform, or use --model hf")
    if library is None and strategy != "base":
        raise IloraError(f"strategy={strategy} needs library=<folder of PEFT LoRA adapters or manifest>")
    forced = strategy_class(strategy).composition_mode
    if forced and composition not in ("param", forced):
        raise IloraError(f"strategy={strategy} routes per token and needs composition={forced}, not {composition}")
    return CheckedArgs(config, forced or composition, bool(forced), kwargs)


def check_strategy_args(strategy: str, config, leftover: dict) -> None:
    """`leftover`: arguments of other strategies that build_config did not take."""
    if leftover:
        raise IloraError(f"{', '.join(sorted(leftover))} is not an argument of strategy={strategy}; "
                         f"its arguments are {', '.join(sorted(asdict(config)))}")
