"""`ilora-eval` command line: one subcommand per module, each adding its own parser."""

import argparse
import importlib
import sys

# subcommand -> module exposing `add_parser(subparsers)`; the module's parser sets `func`.
SUBCOMMANDS = {
    "library": "ilora_eval.library_cli",
    "compare": "ilora_eval.compare",
    "demo": "ilora_eval.demo.cli",
    "tasks-path": "ilora_eval.task_paths",
    "export": "ilora_eval.export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ilora-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv=None) -> int:
    from ilora_eval.errors import IloraError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IloraError as err:
        print(f"ilora-eval: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
