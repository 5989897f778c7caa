"""Installs the start-up hook file `ilora_eval_hook.pth` beside the package.

lm-eval 0.4.13 reads no entry points, so `lm_eval --model ilora` only finds the model when
something registers it in the interpreter that runs the CLI. The .pth file does that lazily:
it imports a tiny module that waits for `lm_eval.models` to be imported. Both a regular wheel
(build_py) and an editable one (editable_wheel) carry the file. MANIFEST.in puts it in the sdist,
so a wheel built from the sdist (what `python -m build` does) carries it too.

The editable install (`pip install -e .`, the README's) maps `ilora_eval.model_wrappers` and
`ilora_eval.tasks` onto the top-level `model_wrappers/` and `tasks/` of the checkout. setuptools
does that with a generated meta-path finder whose module imports pathlib, importlib.util and
itertools: about 25 ms in every interpreter of the environment. `_SmallFinder` writes a finder
that does the same mapping with only what every interpreter has already loaded (docs/compatibility.md,
`python -m benchmarks.startup`). `--config-settings editable_mode=strict|compat` keep setuptools'
own strategies.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "ilora_eval_hook.pth"
PTH_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH)


def _check_pth():
    # A wheel without the hook installs fine and then silently lacks `--model ilora`: fail the build.
    if not os.path.isfile(PTH_SOURCE):
        raise SystemExit(f"error: {PTH_SOURCE} is missing: restore it from git, and keep "
                         f"`include {PTH}` in MANIFEST.in so sdists carry it")


class build_py_with_pth(build_py):
    def run(self):
        _check_pth()
        super().run()
        self.copy_file(PTH_SOURCE, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


class _WrappedStrategy:
    """An editable strategy of setuptools, wrapped: context management goes to the inner one."""

    def __init__(self, inner):
        self._inner = inner

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


class _StrategyWithPth(_WrappedStrategy):
    """Wraps setuptools' editable strategy to add the hook file to the editable wheel."""

    def __call__(self, wheel, files, mapping):
        self._inner(wheel, files, mapping)
        _check_pth()
        with open(PTH_SOURCE, "rb") as fh:
            wheel.writestr(PTH, fh.read())


FINDER_TEMPLATE = '''"""Editable install of ilora-eval (written by its setup.py): package names -> checkout folders.

Only modules every interpreter has already loaded (sys, the frozen import machinery), so this costs
no start-up time; setuptools' generic finder imports pathlib and importlib.util (~25 ms).
"""
import sys

try:
    from _frozen_importlib_external import spec_from_file_location
except ImportError:  # not CPython
    from importlib.util import spec_from_file_location

# package name -> (folder, its __init__.py)
MAPPING = {mapping!r}


class _EditableFinder:
    """Appended to sys.meta_path: a same-named package earlier on sys.path still wins."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        found = MAPPING.get(fullname)
        if found is None:
            return None
        folder, init = found
        return spec_from_file_location(fullname, init, submodule_search_locations=[folder])

    @classmethod
    def invalidate_caches(cls):
        pass


def install():
    if not any(getattr(f, "__module__", None) == __name__ for f in sys.meta_path):
        sys.meta_path.append(_EditableFinder)
'''


class _SmallFinder(_WrappedStrategy):
    """setuptools' lenient editable strategy (`_TopLevelFinder`) with a finder module that imports
    nothing. Used only where every mapped root is a regular package (an __init__.py) and there are
    no namespace packages; otherwise setuptools' own finder is written."""

    @staticmethod
    def wraps(inner) -> bool:
        try:
            _, _, mapping, namespaces = inner.template_vars()
        except Exception:  # another setuptools: its own strategy, correct and only slower
            return False
        return not namespaces and all(os.path.isfile(os.path.join(p, "__init__.py")) for p in mapping.values())

    def __call__(self, wheel, files, mapping):
        finder, _, roots, _ = self._inner.template_vars()
        table = {name: (os.path.abspath(path), os.path.join(os.path.abspath(path), "__init__.py"))
                 for name, path in sorted(roots.items())}
        wheel.writestr(f"{finder}.py", FINDER_TEMPLATE.format(mapping=table).encode())
        wheel.writestr(f"__editable__.{self._inner.name}.pth", f"import {finder}; {finder}.install()\n".encode())


class editable_wheel_with_pth(editable_wheel):
    def _select_strategy(self, *args, **kwargs):
        inner = super()._select_strategy(*args, **kwargs)
        if type(inner).__name__ == "_TopLevelFinder" and _SmallFinder.wraps(inner):
            inner = _SmallFinder(inner)
        return _StrategyWithPth(inner)


setup(cmdclass={"build_py": build_py_with_pth, "editable_wheel": editable_wheel_with_pth})
