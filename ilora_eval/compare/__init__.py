"""`ilora-eval compare`: leaderboard comparisons of lm-eval runs (see cli.py for what it writes).

Modules: results (reading runs, samples, routing logs), labels (run labels, seed groups), seeds
(which groups carry seed variance), pairing (matching documents), stats (tests, corrections,
two-level bootstrap), model (settings and result dataclasses), comparison (the analysis), report
and charts (the outputs, reading model only), cli (the subcommand).
"""

from .cli import add_parser, run
from .comparison import compare
from .model import Comparison, Settings

__all__ = ["Comparison", "Settings", "add_parser", "compare", "run"]
