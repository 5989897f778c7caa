"""`ilora-eval compare`: leaderboard comparisons of lm-eval runs (see cli.py for what it writes).

Modules: results (reading runs, samples, routing logs), labels (run labels, seed groups), pairing
(matching documents), stats (tests, corrections, bootstrap), comparison (the analysis), report and
charts (the outputs), cli (the subcommand).
"""

from .cli import add_parser, run
from .comparison import Comparison, Settings, compare

__all__ = ["Comparison", "Settings", "add_parser", "compare", "run"]
