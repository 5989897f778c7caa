"""The start-up hook against fake lm-eval packages of each registry shape it can meet.

Each case writes a small fake `lm_eval` package into a temporary folder and runs a `python -S`
subprocess (no site-packages, so neither the real lm-eval nor any installed .pth is seen) with that
folder and the checkout on sys.path. The subprocess imports the hook the way the .pth does, then
plays the host: `--model hf` must resolve to lm-eval's own class whatever the hook did.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# lm-eval >= 0.4.10: a Registry of lazy "module:Class" targets; get_model imports lm_eval.models when
# the registry is empty (api/registry.py). `plugins=True` adds lm-eval's entry-point reader
# (`load_plugins`, upstream PR #4013), which reads `lm_eval.models` entry points itself.
LAZY_REGISTRY = '''
class Registry:
    def __init__(self):
        self._objs = {}
    def register(self, *names, target=None):
        if target is None:
            def deco(obj):
                for n in names:
                    self._objs[n] = obj
                return obj
            return deco
        for n in names:
            if n in self._objs:
                raise ValueError(f"alias {n!r} already registered")
            self._objs[n] = target
    def __contains__(self, name):
        return name in self._objs
    def __len__(self):
        return len(self._objs)
    def get(self, name):
        obj = self._objs[name]
        if isinstance(obj, str):
            raise AssertionError(f"materialised lazy entry {obj}")
        return obj
    def target(self, name):
        return self._objs[name]
model_registry = Registry()
MODEL_REGISTRY = model_registry
def get_model(name):
    if len(model_registry) == 0:
        import lm_eval.models
    return model_registry.get(name)
'''
LAZY_MODELS = '''
from lm_eval.api.registry import model_registry
class HFLM:
    pass
model_registry.register("hf")(HFLM)
'''
# lm-eval <= 0.4.9.x: a plain dict of classes filled by @register_model as lm_eval.models imports.
LEGACY_REGISTRY = '''
MODEL_REGISTRY = {}
def register_model(*names):
    def deco(cls):
        for n in names:
            assert n not in MODEL_REGISTRY
            MODEL_REGISTRY[n] = cls
        return cls
    return deco
def get_model(name):
    return MODEL_REGISTRY[name]
'''
LEGACY_MODELS = '''
from lm_eval.api.registry import register_model
@register_model("hf")
class HFLM:
    pass
'''
PLUGIN_EXTRA = '''
def load_plugins(group, registry):
    return []
'''
# The registry raises on every use the hook could make of it.
HOSTILE_REGISTRY = '''
class Hostile:
    def __contains__(self, name):
        raise RuntimeError("hostile registry")
    def register(self, *a, **k):
        raise RuntimeError("hostile registry")
model_registry = Hostile()
HF = type("HFLM", (), {})
def get_model(name):
    import lm_eval.models
    return HF
'''


def _fake_lm_eval(root: Path, registry: str, models: str, version: str = "0.4.13") -> Path:
    pkg = root / "lm_eval"
    (pkg / "api").mkdir(parents=True)
    (pkg / "models").mkdir()
    (pkg / "__init__.py").write_text(f"__version__ = {version!r}\n")
    (pkg / "api" / "__init__.py").write_text("")
    (pkg / "api" / "registry.py").write_text(textwrap.dedent(registry))
    (pkg / "models" / "__init__.py").write_text(textwrap.dedent(models))
    return root


def _host(root: Path, code: str, *, hook_first: bool = True) -> dict:
    """Runs `code` in `python -S` with the fake package and the checkout on sys.path, after the
    hook was imported (as ilora_eval_hook.pth does); `code` sets `out` (a JSON-able dict)."""
    hook = "import ilora_eval._lm_eval_hook as hook\n"
    script = (f"import sys, json\nsys.path[:0] = [{str(root)!r}, {str(REPO)!r}]\n"
              + (hook if hook_first else "") + textwrap.dedent(code)
              + "\nout['torch'] = 'torch' in sys.modules\nprint(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hook_imports_nothing_of_lm_eval_or_torch_at_start_up(tmp_path):
    root = _fake_lm_eval(tmp_path, LAZY_REGISTRY, LAZY_MODELS)
    out = _host(root, "out = {'lm_eval': any(m.split('.')[0] == 'lm_eval' for m in sys.modules),"
                      " 'finders': sum(type(f).__name__ == '_Finder' for f in sys.meta_path)}\n"
                      "import importlib; importlib.reload(hook)\n"
                      "out['finders_after_reload'] = sum(type(f).__name__ == '_Finder' for f in sys.meta_path)")
    assert out == {"lm_eval": False, "finders": 1, "finders_after_reload": 1, "torch": False}


def test_lazy_registry_gets_a_lazy_ilora_and_keeps_hf(tmp_path):
    root = _fake_lm_eval(tmp_path, LAZY_REGISTRY, LAZY_MODELS)
    out = _host(root, """
        from lm_eval.api import registry
        out = {'before': 'ilora' in registry.model_registry}
        hf = registry.get_model('hf')
        out.update(hf=hf.__module__ + ':' + hf.__name__, ilora=registry.model_registry.target('ilora'))
    """)
    assert out == {"before": False, "hf": "lm_eval.models:HFLM", "ilora": "ilora_eval.model_wrappers.ilora_lm:IloraLM",
                   "torch": False}


def test_lm_eval_models_imported_before_the_hook_is_served_at_once(tmp_path):
    root = _fake_lm_eval(tmp_path, LAZY_REGISTRY, LAZY_MODELS)
    out = _host(root, """
        import lm_eval.models
        from lm_eval.api import registry
        out = {'before': 'ilora' in registry.model_registry}
        import ilora_eval._lm_eval_hook
        out['after'] = 'ilora' in registry.model_registry
        out['again'] = ilora_eval._lm_eval_hook.register()
    """, hook_first=False)
    assert out == {"before": False, "after": True, "again": "present", "torch": False}


def test_lm_eval_that_reads_entry_points_itself_is_left_alone(tmp_path):
    root = _fake_lm_eval(tmp_path, LAZY_REGISTRY + PLUGIN_EXTRA, LAZY_MODELS)
    out = _host(root, """
        from lm_eval.api import registry
        hf = registry.get_model('hf')
        out = {'hf': hf.__name__, 'ilora': 'ilora' in registry.model_registry, 'did': hook.register()}
    """)
    assert out == {"hf": "HFLM", "ilora": False, "did": "steps aside", "torch": False}


def test_legacy_dict_registry_keeps_hf_and_ilora_stops_with_one_line(tmp_path):
    root = _fake_lm_eval(tmp_path, LEGACY_REGISTRY, LEGACY_MODELS, version="0.4.8")
    out = _host(root, """
        import lm_eval.models
        from lm_eval.api import registry
        out = {'names': sorted(registry.MODEL_REGISTRY), 'hf': registry.get_model('hf').__name__}
        try:
            registry.get_model('ilora').create_from_arg_string('pretrained=x', {})
        except Exception as exc:
            out['error'] = [type(exc).__name__, str(exc)]
    """)
    assert out["names"] == ["hf", "ilora"] and out["hf"] == "HFLM" and not out["torch"]
    kind, message = out["error"]
    assert kind == "IloraError" and "\n" not in message
    assert message.startswith("lm-eval 0.4.8 is installed but ilora-eval supports lm-eval >=0.4.11,<0.5")


@pytest.mark.parametrize("shape", ["hostile", "no registry"])
def test_registry_the_hook_cannot_use_leaves_lm_eval_working(tmp_path, shape):
    registry = HOSTILE_REGISTRY if shape == "hostile" else "HF = type('HFLM', (), {})\ndef get_model(name):\n    return HF\n"
    root = _fake_lm_eval(tmp_path, registry, "import lm_eval.api.registry\n")
    out = _host(root, """
        import lm_eval.models
        from lm_eval.api import registry
        out = {'hf': registry.get_model('hf').__name__, 'did': hook.register()}
    """)
    assert out == {"hf": "HFLM", "did": "nothing", "torch": False}


def test_lm_eval_models_own_import_error_reaches_the_host_unchanged(tmp_path):
    root = _fake_lm_eval(tmp_path, LAZY_REGISTRY, "raise ImportError('lm-eval is broken on its own')\n")
    out = _host(root, """
        try:
            import lm_eval.models
        except ImportError as exc:
            out = {'error': str(exc)}
    """)
    assert out == {"error": "lm-eval is broken on its own", "torch": False}
