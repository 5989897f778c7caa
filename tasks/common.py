"""The single import surface of the ilora task pack: metric, data access, held-out split, loaders
and lm-eval's stock BBH filters.

lm-eval loads the `!function utils.X` helpers of a YAML from the `utils.py` beside it, by file
path. `bbh_ilora/utils.py` and `unseen/utils.py` re-export what is gathered here, so every task of
the pack uses the same loader, split and normaliser. The code lives in one module per job:

    metric.py      LoraHub's normaliser, exact match
    data.py        BBH task list, BBH examples (local folder or Hub), JSON/JSONL files
    split.py       held-out adaptation split (fixed draw, per-seed protocol)
    loaders.py     the YAMLs' `custom_dataset` loaders (load_bbh, load_bbh_mixed, load_unseen)
    stock_bbh.py   lm-eval's stock BBH configs: descriptions, `flexible-extract` filters

`datasets` is imported where used. Absolute imports: a test loads this file by its path.
"""

from __future__ import annotations

from ilora_eval.tasks.data import (BBH_DIR_ENV, BBH_TASKS, HUB_DATASET, TEST_SPLIT, _local_task_file,  # noqa: F401
                                   bbh_dir_from_env, read_bbh_examples, read_local_examples)
from ilora_eval.tasks.loaders import MIXED_SOURCE_TASKS, UNSEEN_KEYS, load_bbh, load_bbh_mixed, load_unseen
from ilora_eval.tasks.metric import exact_match, lorahub_normalize
from ilora_eval.tasks.split import (ADAPT_SEED, ADAPT_SPLIT, N_ADAPT, _to_dataset_dict, adapt_indices,  # noqa: F401
                                    seeded_split, split_rows)
from ilora_eval.tasks.stock_bbh import (BBHFlexibleExtract, _stock_flexible_filters,  # noqa: F401
                                        _stock_zeroshot_config, bbh_description, lm_eval_tasks_dir)

__all__ = [
    # metric
    "lorahub_normalize", "exact_match",
    # data access
    "BBH_TASKS", "HUB_DATASET", "BBH_DIR_ENV", "TEST_SPLIT", "bbh_dir_from_env", "read_local_examples",
    "read_bbh_examples",
    # held-out split
    "N_ADAPT", "ADAPT_SEED", "ADAPT_SPLIT", "adapt_indices", "seeded_split", "split_rows",
    # loaders
    "MIXED_SOURCE_TASKS", "UNSEEN_KEYS", "load_bbh", "load_bbh_mixed", "load_unseen",
    # lm-eval's stock BBH configs
    "lm_eval_tasks_dir", "bbh_description", "BBHFlexibleExtract",
]
