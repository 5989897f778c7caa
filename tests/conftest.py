import importlib.util
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# tiny models: one thread is as fast and immune to a busy neighbour on a 2-core machine
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_BBH = REPO.parent / "shared" / "data" / "bbh"


@pytest.fixture(scope="module")
def recipe():
    """scripts/paper/reproduce.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts" / "paper" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["ILORA_EVAL_CACHE"] = str(tmp_path_factory.mktemp("ilora_cache"))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


def _build(root: Path, kind: str):
    import tiny

    base = root / f"{kind}_base"
    lib = root / f"{kind}_lib"
    if not base.exists():
        tiny.make_model(base, kind)
        tiny.make_library(base, lib, kind)
    return base, lib


@pytest.fixture(scope="session")
def llama(tiny_root):
    return _build(tiny_root, "llama")


@pytest.fixture(scope="session")
def t5(tiny_root):
    return _build(tiny_root, "t5")


@pytest.fixture(scope="session")
def gpt2(tiny_root):
    return _build(tiny_root, "gpt2")
