"""Registers `--model ilora` with lm-eval without importing lm-eval (or torch) at start-up.

`ilora_eval_hook.pth` imports this module in every interpreter of the environment, so it imports
nothing but `sys` (already loaded): importlib.abc alone pulls in importlib.resources and pathlib,
about 18 ms in a wheel install (benchmarks/README.md). It only puts a finder on `sys.meta_path`.
When `lm_eval.models` (the module that fills lm-eval's model registry with its stock entries)
finishes importing, `ilora` is added as one more entry. Registering earlier would make the
registry non-empty before lm-eval fills it, and `--model hf` would disappear.

The hook serves the host, never the other way round: every step is wrapped so that nothing it
does can raise into the interpreter or into lm-eval, and what it does depends on the registry it
finds (feature detection, never a version number):

* `registry.load_plugins` exists: lm-eval reads the `lm_eval.models` entry points itself (the
  plugin registration of lm-eval's PR #4013); pyproject declares `ilora` there, so the hook steps
  aside.
* `registry.model_registry.register(name, target=...)` exists (lm-eval >= 0.4.10): a lazy entry,
  so torch and the model load only when `--model ilora` is asked for.
* only a `MODEL_REGISTRY` dict of classes (lm-eval <= 0.4.9.x): ilora cannot run there; the entry
  added is a stand-in whose construction stops with one line naming the supported range, so
  `--model ilora` says why instead of listing every model, and the stock models are untouched.
* anything else: nothing.
"""

import sys

TARGET_MODULE = "lm_eval.models"
MODEL_NAME = "ilora"
MODEL_PATH = "ilora_eval.model_wrappers.ilora_lm:IloraLM"


def _unsupported_model():
    """The stand-in for an lm-eval ilora cannot serve: constructing it stops the run with the
    one-line reason (lm_eval_compat.check_version's), through the project's error type."""

    def refuse(*args, **kwargs):
        from ilora_eval import lm_eval_compat
        from ilora_eval.errors import IloraError, install_excepthook

        install_excepthook()
        lm_eval_compat.check_version()
        raise IloraError("this lm-eval cannot run --model ilora; pip install 'lm-eval" + lm_eval_compat.RANGE + "'")

    return type("IloraUnsupported", (), {
        "__init__": refuse,
        "create_from_arg_string": classmethod(refuse),
        "create_from_arg_obj": classmethod(refuse),
    })


def register(registry_module=None) -> str:
    """Adds `ilora` to lm-eval's model registry as the registry's shape allows; returns what it
    did ("steps aside", "lazy", "stand-in", "present", "nothing"). Never raises."""
    try:
        if registry_module is None:
            from lm_eval.api import registry as registry_module
        if callable(getattr(registry_module, "load_plugins", None)):
            return "steps aside"
        registry = getattr(registry_module, "model_registry", None)
        if registry is not None and callable(getattr(registry, "register", None)):
            # `in`, not `.get`: get() would materialise a lazy entry, importing torch and the model.
            if MODEL_NAME in registry:
                return "present"
            registry.register(MODEL_NAME, target=MODEL_PATH)
            return "lazy"
        legacy = getattr(registry_module, "MODEL_REGISTRY", None)
        if type(legacy) is dict:
            if MODEL_NAME in legacy:
                return "present"
            legacy[MODEL_NAME] = _unsupported_model()
            return "stand-in"
    except Exception:  # the host's run matters more than --model ilora: never break it
        pass
    return "nothing"


class _Loader:
    """The real loader of `lm_eval.models`, plus the registration once its module has run."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)  # lm-eval's own errors propagate unchanged
        register()

    def __getattr__(self, name):
        # get_resource_reader, get_source, is_package, ... must reach the real loader: the module's
        # __loader__ is this wrapper. `_inner` itself is looked up here only before __init__ ran
        # (copy, pickle): without the guard that would recurse.
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


class _Finder:
    """A meta-path finder (duck-typed: subclassing importlib.abc costs the 18 ms this avoids)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET_MODULE:
            return None
        try:
            return self._wrapped_spec(fullname, path, target)
        except Exception:  # a finder that raises would break `import lm_eval.models` itself
            return None

    def _wrapped_spec(self, fullname, path, target):
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None or _is_ours(finder):
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            # Nothing to wrap: let the import system use the spec it would have found anyway.
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def _is_ours(finder) -> bool:
    # by name, not isinstance: a reloaded or second copy of this module has its own _Finder class
    kind = type(finder)
    return kind.__name__ == "_Finder" and kind.__module__ == __name__


def install() -> None:
    try:
        if TARGET_MODULE in sys.modules:
            register()
        elif not any(map(_is_ours, sys.meta_path)):
            sys.meta_path.insert(0, _Finder())
    except Exception:  # a .pth line that raises prints a traceback at every interpreter start
        pass


install()
