"""Registers `--model ilora` with lm-eval 0.4.13 without importing lm-eval at start-up.

`ilora_eval_hook.pth` imports this module in every interpreter, so it imports nothing but `sys`
(already loaded): importlib.abc alone pulls in importlib.resources and pathlib, about 18 ms in a
wheel install (benchmarks/README.md). It only puts a finder on `sys.meta_path`. When
`lm_eval.models` (the module that fills lm-eval's model registry with its stock lazy entries)
finishes importing, `ilora` is added as one more lazy entry. Registering earlier would make the
registry non-empty before lm-eval fills it, and `--model hf` would disappear.
"""

import sys

TARGET_MODULE = "lm_eval.models"
MODEL_NAME = "ilora"
MODEL_PATH = "ilora_eval.model_wrappers.ilora_lm:IloraLM"


def register(registry_module=None) -> None:
    if registry_module is None:
        from lm_eval.api import registry as registry_module
    # `in`, not `.get`: get() would materialise a lazy entry, importing torch and the model.
    if MODEL_NAME not in registry_module.model_registry:
        registry_module.model_registry.register(MODEL_NAME, target=MODEL_PATH)


class _Loader:
    """The real loader of `lm_eval.models`, plus the registration once its module has run."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
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
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None or isinstance(finder, _Finder):
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


def install() -> None:
    if TARGET_MODULE in sys.modules:
        register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
