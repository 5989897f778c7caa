"""`--model ilora`'s arguments, checked before HFLM loads anything (a typo costs no model load)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ilora_eval.composition import CompositionState
from ilora_eval.errors import IloraError
from ilora_eval.strategies import StrategyConfig, build_config, strategy_arg_names, strategy_class
from ilora_eval.util import as_bool

# HFLM passes unknown keyword arguments to from_pretrained; these are the ones we let through.
FROM_PRETRAINED_KWARGS = {
    "attn_implementation", "low_cpu_mem_usage", "device_map", "quantization_config", "load_in_8bit",
    "load_in_4bit", "cache_dir", "token", "local_files_only", "use_safetensors", "torch_dtype",
}

# `--model ilora`'s own arguments besides pretrained/library/strategy/composition, with their
# defaults (written here only); docs/model-args.md describes them
OWN_DEFAULTS = {
    "embedder": None,  # sentence embedder of routing (None: embeddings.DEFAULT_EMBEDDER)
    "exclude": None,  # adapters left out of the library (patterns)
    "routing_log": None,  # an explicit routing log path (else beside lm-eval's results)
    "include_path": None,  # task folders, ':'-separated (for adaptation examples outside a run)
    "check_base": True,  # refuse a library trained on another base model
    "progress": True,  # progress bars (rank 0)
    "fit_cache": None,  # the learned-weights cache folder, or false
    "adapter_cache": CompositionState.adapter_cache,  # library adapters held on the device (LRU)
}


@dataclass
class CheckedArgs:
    config: StrategyConfig  # the strategy's own arguments
    mode: str  # the composition layer's mode
    forced: bool  # the strategy chose the mode (arrow: then its arguments configure the layer)
    hflm: dict  # everything else, for HFLM
    own: dict = field(default_factory=lambda: dict(OWN_DEFAULTS))  # OWN_DEFAULTS' keys, checked

    def composition_state(self) -> CompositionState:
        state = CompositionState(mode=self.mode, adapter_cache=self.own["adapter_cache"])
        if self.forced and self.mode == "arrow":
            state.arrow_k, state.arrow_temperature = self.config.arrow_k, self.config.arrow_temperature
        return state

    def open_library(self, library, pretrained):
        """The LoraLibrary of `library=` (None without one); its base model is checked against
        `pretrained` unless check_base=false."""
        if library is None:
            return None
        from ilora_eval.library import LoraLibrary

        check = pretrained if self.own["check_base"] and isinstance(pretrained, str) else None
        return LoraLibrary.open(library, exclude=self.own["exclude"], check_base=check, progress=self.own["progress"])

    def router_kwargs(self, library) -> dict:
        """The Router's keywords from ilora's own arguments (`library`: as given, for the record)."""
        own = self.own
        return {"embedder": own["embedder"], "fit_cache": own["fit_cache"], "progress": own["progress"],
                "include_paths": [p for p in (own["include_path"] or "").split(":") if p],
                "library_spec": None if library is None else str(library), "exclude": own["exclude"],
                "routing_log": own["routing_log"]}


def check_own_args(kwargs: dict) -> dict:
    """Takes ilora's own arguments (OWN_DEFAULTS' keys) out of `kwargs`, checked."""
    own = {k: kwargs.pop(k, default) for k, default in OWN_DEFAULTS.items()}
    for flag in ("check_base", "progress"):
        own[flag] = as_bool(own[flag], flag)
    size = own["adapter_cache"]
    try:
        own["adapter_cache"] = int(size)
        ok = own["adapter_cache"] >= 1 and str(size).strip().lstrip("+").isdigit()
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise IloraError(f"adapter_cache={size!r} must be a whole number >= 1 (library adapters held on the "
                         "device at once); e.g. adapter_cache=64")
    return own


def check_model_args(strategy: str, library, composition: str, kwargs: dict, hflm_args: set[str]) -> CheckedArgs:
    """Splits `kwargs` into ilora's own arguments, the strategy's and HFLM's (`hflm_args`, plus the
    from_pretrained ones let through); anything else is an error."""
    kwargs = dict(kwargs)
    mine = check_own_args(kwargs)
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
    return CheckedArgs(config, forced or composition, bool(forced), kwargs, mine)


def check_strategy_args(strategy: str, config, leftover: dict) -> None:
    """`leftover`: arguments of other strategies that build_config did not take."""
    if leftover:
        raise IloraError(f"{', '.join(sorted(leftover))} is not an argument of strategy={strategy}; "
                         f"its arguments are {', '.join(sorted(asdict(config)))}")
