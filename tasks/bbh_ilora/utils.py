"""`!function` helpers of the bbh_ilora YAMLs; the code lives in `tasks/common.py`.

lm-eval imports this file by its path (not as a package module), so `common.py` is loaded
by path as well, under a name derived from its location.
"""

import hashlib
import importlib.util
import sys
from pathlib import Path


def _load_common():
    path = Path(__file__).resolve().parent.parent / "common.py"
    name = "_ilora_task_pack_common_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


common = _load_common()

BBH_TASKS = common.BBH_TASKS
N_ADAPT = common.N_ADAPT
ADAPT_SEED = common.ADAPT_SEED
lorahub_normalize = common.lorahub_normalize
exact_match = common.exact_match
adapt_indices = common.adapt_indices
load_bbh = common.load_bbh
load_bbh_mixed = common.load_bbh_mixed
load_unseen = common.load_unseen
BBHFlexibleExtract = common.BBHFlexibleExtract
