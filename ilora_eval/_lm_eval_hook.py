"""Registers `--model ilora` with lm-eval 0.4.13 without importing lm-eval at start-up.

Imported from `ilora_eval_hook.pth` in every interpreter, so it must stay cheap: it only
installs a meta-path finder. When `lm_eval.models` (the module that fills lm-eval's model
registry with its stock lazy entries) finishes importing, the finder adds `ilora` as one more
lazy entry. Registering earlier would make the registry non-empty before lm-eval fills it,
and `--model hf` would disappear.
"""

import importlib.abc
import importlib.util
import sys

TARGET_MODULE = "lm_eval.models"
MODEL_NAME = "ilora"
MODEL_PATH = "ilora_eval.model_wrappers.ilora_lm:IloraLM"


def register(registry_module=None) -> None:
    if registry_module is None:
        from lm_eval.api import registry as registry_module
    if registry_module.model_registry.get(MODEL_NAME, None) is None:
        registry_module.model_registry.register(MODEL_NAME, target=MODEL_PATH)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        register()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    if TARGET_MODULE in sys.modules:
        register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
