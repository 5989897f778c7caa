"""`!function` helpers of the bbh_ilora YAMLs; the code lives in `tasks/common.py`.

lm-eval imports this file by its path; the code is the installed package's `ilora_eval.tasks.common`.
"""

from ilora_eval.tasks.common import *  # noqa: F401,F403 (the names the YAMLs' !function tags use)
