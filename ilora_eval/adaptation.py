"""Adaptation examples of a task, and the answer-free text of its documents.

Examples come only from material that is never scored: the task's `fewshot_split` (the task
pack's held-out `adapt` split), its `fewshot_config.samples`, or its train/validation split.
lm-eval's own fallback to test documents is never used, and a scored document's target is
never read.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from ilora_eval.errors import IloraError


@dataclass(frozen=True)
class Example:
    prompt: str  # what the model is conditioned on (description + doc_to_text), as at test time
    text: str  # doc_to_text alone: what is embedded for retrieval and routing
    target: str  # target_delimiter + doc_to_target


@dataclass
class TaskData:
    name: str
    task: object | None  # the lm-eval Task, when available
    examples: list[Example]
    source: str  # where the examples came from

    def doc_text(self, doc, fallback: str) -> str:
        if self.task is not None and isinstance(doc, dict):
            try:
                text = self.task.doc_to_text(doc)
                if isinstance(text, str):
                    return text
            except Exception:
                pass
        return fallback


def live_tasks() -> dict | None:
    """The Task objects of the `lm_eval.evaluator.evaluate` call in progress, if any.

    lm-eval 0.4.13 hands the model no Task; the evaluator's frame holds the very objects it
    scores (with the CLI's include paths and overrides applied), so they are read from there.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "evaluate" and frame.f_globals.get("__name__") == "lm_eval.evaluator":
            tasks = frame.f_locals.get("eval_tasks")
            if isinstance(tasks, dict):
                return tasks
        frame = frame.f_back
    return None


def load_tasks(names: list[str], include_paths: list[str]) -> dict:
    """Tasks by name through a TaskManager that also sees the task pack; unknown names are left
    out (their documents are routed by the prompt text, and no adaptation examples exist)."""
    from lm_eval.tasks import TaskManager

    from ilora_eval.task_paths import task_pack_dir

    manager = TaskManager(include_path=[str(task_pack_dir()), *include_paths])
    out = {}
    for name in names:
        try:
            loaded = manager.load([name])
        except KeyError:
            continue
        out.update(loaded["tasks"] if isinstance(loaded, dict) and "tasks" in loaded else loaded)
    return out


def adaptation_docs(task, n: int, seed: int) -> tuple[list, str]:
    cfg = task.config
    docs, source = None, None
    fewshot = getattr(task, "fewshot_cfg", None)  # lm-eval's FewshotConfig (split, samples, ...)
    split = getattr(cfg, "fewshot_split", None) or getattr(fewshot, "split", None)
    if split:
        if split == cfg.test_split:
            raise IloraError(f"task {cfg.task}: fewshot_split equals the test split {split!r}; adaptation examples "
                             "would be scored documents. Hold documents out in another split")
        docs, source = list(task.fewshot_docs()), f"fewshot_split:{split}"
    elif getattr(fewshot, "samples", None) is not None:
        docs, source = list(task.fewshot_docs()), "fewshot_config.samples"
    elif task.has_training_docs():
        docs, source = list(task.training_docs()), f"training_split:{cfg.training_split}"
    elif task.has_validation_docs():
        docs, source = list(task.validation_docs()), f"validation_split:{cfg.validation_split}"
    if not docs:
        return [], "none"
    if len(docs) > n:
        docs = random.Random(seed).sample(docs, n)
    return docs, source


def format_example(task, doc) -> Example:
    cfg = task.config
    text = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    if cfg.output_type == "multiple_choice" or isinstance(target, int):
        choices = task.doc_to_choice(doc)
        if isinstance(target, list):
            target = target[0]
        if isinstance(target, int):
            target = choices[target]
        elif isinstance(target, str) and target not in choices and target.strip() in choices:
            target = target.strip()
    if isinstance(target, list):
        target = target[0]
    if isinstance(text, int):  # doc_to_text may index choices (winogrande-style); use the choice text
        text = task.doc_to_choice(doc)[text]
    description = task.resolve_field(doc, cfg.description) or "" if cfg.description else ""
    delimiter = cfg.target_delimiter if cfg.target_delimiter is not None else " "
    return Example(prompt=f"{description}{text}", text=str(text), target=f"{delimiter}{target}")


def task_data(name: str, task, n: int, seed: int) -> TaskData:
    docs, source = adaptation_docs(task, n, seed)
    return TaskData(name, task, [format_example(task, d) for d in docs], source)
