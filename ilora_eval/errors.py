"""One exception type for every user-facing error, so the CLIs can print it on one line."""


class IloraError(Exception):
    """Bad input or configuration: the message names the problem and the fix."""


def install_excepthook() -> None:
    """Under the stock `lm_eval` CLI an IloraError ends the run with its one-line message, not a
    traceback (set ILORA_EVAL_TRACEBACK=1 to see it)."""
    import os
    import sys

    previous = sys.excepthook
    if getattr(previous, "_ilora", False):
        return

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, IloraError) and not os.environ.get("ILORA_EVAL_TRACEBACK"):
            print(f"ilora-eval: error: {exc}", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    hook._ilora = True
    sys.excepthook = hook
