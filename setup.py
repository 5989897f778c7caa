"""Installs the start-up hook file `ilora_eval_hook.pth` beside the package.

lm-eval 0.4.13 reads no entry points, so `lm_eval --model ilora` only finds the model when
something registers it in the interpreter that runs the CLI. The .pth file does that lazily:
it imports a tiny module that waits for `lm_eval.models` to be imported. Both a regular wheel
(build_py) and an editable one (editable_wheel) carry the file. MANIFEST.in puts it in the sdist,
so a wheel built from the sdist (what `python -m build` does) carries it too.
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


class _StrategyWithPth:
    """Wraps setuptools' editable strategy to add the hook file to the editable wheel."""

    def __init__(self, inner):
        self._inner = inner

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self._inner(wheel, files, mapping)
        _check_pth()
        with open(PTH_SOURCE, "rb") as fh:
            wheel.writestr(PTH, fh.read())


class editable_wheel_with_pth(editable_wheel):
    def _select_strategy(self, *args, **kwargs):
        return _StrategyWithPth(super()._select_strategy(*args, **kwargs))


setup(cmdclass={"build_py": build_py_with_pth, "editable_wheel": editable_wheel_with_pth})
