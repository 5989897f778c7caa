"""Where the installed task pack lives (for `lm_eval --include_path`)."""

from pathlib import Path


def task_pack_dir() -> Path:
    import ilora_eval.tasks

    return Path(ilora_eval.tasks.__file__).parent


def add_parser(sub) -> None:
    p = sub.add_parser("tasks-path", help="print the task-pack directory to pass to lm_eval --include_path")
    p.set_defaults(func=lambda args: print(task_pack_dir()))
