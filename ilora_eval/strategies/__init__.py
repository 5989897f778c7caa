"""Strategies: one module and config dataclass each, registered on `Strategy` by subclassing."""

from ilora_eval.strategies.base import (Routing, Strategy, StrategyConfig, StrategyEnv, build_config,
                                        strategy_arg_names, strategy_class)
from ilora_eval.strategies.fit import TaskFit
from ilora_eval.strategies import arrow, ilora, lorahub, retrieve_fuse, simple  # noqa: F401,E402  (built-ins register)

__all__ = ["Routing", "Strategy", "StrategyConfig", "StrategyEnv", "TaskFit", "build_config", "strategy_arg_names",
           "strategy_class"]
