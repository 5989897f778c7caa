"""ilora-eval: instance-level dynamic LoRA composition for lm-evaluation-harness.

Kept import-free: the start-up hook imports this package in every interpreter.
"""

__version__ = "0.1.0"
