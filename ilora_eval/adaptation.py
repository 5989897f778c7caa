"""Adaptation examples of a task, and the answer-free text of its documents.

Examples come only from documents lm-eval does not score in this run: the task's `fewshot_split`
(the task pack's held-out `adapt` split), its `fewshot_config.samples`, or a train/validation
split, and only when that split is not the scored one (lm-eval scores test, else validation),
does not read the same data files, and shares no document with it. Otherwise the task is refused
in one line. A scored document's target is never read.

Each example's prompt is the context lm-eval itself builds for that document in this run (few-shot
examples, description, system instruction, chat template), so the weights are learned on the
kind of prompt they are used on. Retrieval and routing embed `doc_to_text` alone.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from ilora_eval import lm_eval_compat as compat
from ilora_eval.errors import IloraError

FIX = ("give the task a fewshot_split or fewshot_config.samples of held-out documents, or use a task-pack task "
       "(--include_path $(ilora-eval tasks-path))")


@dataclass(frozen=True)
class Example:
    prompt: str  # the context lm-eval builds for this document in this run
    text: str  # doc_to_text alone: what is embedded for retrieval and routing
    target: str  # the continuation after `prompt` (lm-eval's delimiter + answer)
    answer: str = ""  # the answer alone (a seq2seq decoder target); defaults to `target`
    stop: str | None = None  # what ends a generated answer (the task's first `until`), if it generates

    def __post_init__(self):
        if not self.answer:
            object.__setattr__(self, "answer", self.target)


@dataclass
class TaskData:
    name: str
    task: object | None  # the lm-eval Task, when available
    examples: list[Example]
    source: str  # where the examples came from
    split: str | None = None  # the split they came from (None: inline samples)
    scored_split: str | None = None
    doc_ids: list = field(default_factory=list)  # the adaptation documents' ids in their source
    adapt_seed: int | None = None  # the task pack's per-seed draw (`--metadata '{"adapt_seed": S}'`), if on

    def doc_text(self, doc, fallback: str) -> str:
        if self.task is not None and isinstance(doc, dict):
            try:
                text = self.task.doc_to_text(doc)
                if isinstance(text, str):
                    return text
            except Exception:  # a doc the task cannot format is routed by its prompt instead
                pass
        return fallback

    def record(self) -> dict:
        return {"adaptation_source": self.source, "adapt_seed": self.adapt_seed, "adaptation_split": self.split, "scored_split": self.scored_split,
                "adaptation_doc_ids": self.doc_ids, "n_adaptation_examples": len(self.examples)}


def load_tasks(names: list[str], include_paths: list[str]) -> dict:
    """Tasks by name through a TaskManager that also sees the task pack; unknown names are left
    out (their documents are routed by the prompt text, and no adaptation examples exist)."""
    from lm_eval.tasks import TaskManager

    from ilora_eval.task_paths import task_pack_dir

    manager = TaskManager(include_path=[str(task_pack_dir()), *include_paths])
    out = {}
    for name in names:
        try:
            out.update(compat.load_tasks(manager, [name]))
        except KeyError:
            continue
    return out


def _doc_key(doc) -> str:
    return json.dumps(doc, sort_keys=True, default=str)


def adaptation_docs(task, n: int, seed: int) -> tuple[list, str, str | None, list]:
    """(docs, source, split, ids): at most `n` documents that lm-eval does not score."""
    cfg = task.config
    name = cfg.task
    scored = compat.scored_split(task)
    scored_files = compat.data_files(task, scored)

    def clash(split: str) -> str | None:
        if split == scored:
            return "is the scored split"
        if scored_files is not None and compat.data_files(task, split) == scored_files:
            return "reads the same data files as the scored split"
        return None

    def refuse(why: str) -> IloraError:
        return IloraError(f"task {name}: no adaptation examples that lm-eval does not score: it scores the {scored!r} "
                          f"split, {why}; {FIX}")

    fewshot = getattr(task, "fewshot_cfg", None)  # lm-eval's FewshotConfig (split, samples, ...)
    split = getattr(cfg, "fewshot_split", None) or getattr(fewshot, "split", None)
    docs = source = used_split = None
    if split:
        if reason := clash(split):
            raise refuse(f"its fewshot_split {split!r} {reason}")
        docs, source, used_split = list(task.fewshot_docs()), f"fewshot_split:{split}", split
    elif getattr(fewshot, "samples", None) is not None:
        docs, source = list(task.fewshot_docs()), "fewshot_config.samples"
    else:
        reasons = []
        for kind, has, get in (("training", task.has_training_docs, task.training_docs),
                               ("validation", task.has_validation_docs, task.validation_docs)):
            split = getattr(cfg, f"{kind}_split", None)
            if not has():
                continue
            if reason := clash(split):
                reasons.append(f"its {kind}_split {split!r} {reason}")
                continue
            docs, source, used_split = list(get()), f"{kind}_split:{split}", split
            break
        if docs is None:
            raise refuse(", ".join([*reasons, "and it has no other split or few-shot samples"]))
    if not docs:
        raise IloraError(f"task {name}: its adaptation source {source} holds no documents; {FIX}")
    picked = random.Random(seed).sample(range(len(docs)), n) if len(docs) > n else list(range(len(docs)))
    chosen = [docs[i] for i in picked]
    scored_keys = {_doc_key(d) for d in compat.eval_docs(task)} if scored is not None else set()
    shared = sum(_doc_key(d) in scored_keys for d in chosen)
    if shared:
        raise IloraError(f"task {name}: {shared} of the adaptation documents from {source} are also scored documents "
                         f"of its {scored!r} split; {FIX}")
    return chosen, source, used_split, [_doc_id(d, i, name) for d, i in zip(chosen, picked)]


def _doc_id(doc, position: int, task_name: str):
    """The document's own id where the task pack gives one (`source_index`, prefixed by its source
    task when that is another task), else its position in the adaptation source."""
    if isinstance(doc, dict) and "source_index" in doc:
        source = doc.get("source_task")
        return doc["source_index"] if source in (None, task_name) or task_name.startswith(f"bbh_ilora_{source}") \
            else f"{source}/{doc['source_index']}"
    return position


def format_example(task, doc, settings: compat.PromptSettings) -> Example:
    """The prompt and continuation lm-eval would build for `doc` as a scored document."""
    cfg = task.config
    output_type = cfg.output_type
    if output_type == "loglikelihood_rolling":
        raise IloraError(f"task {cfg.task} is a perplexity task (loglikelihood_rolling): it has no answer to adapt "
                         "weights on; use strategy=base, uniform, retrieve_fuse or arrow")
    ctx = compat.fewshot_context(task, doc, settings)
    text = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    if isinstance(target, list):
        target = target[0]
    if output_type == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if isinstance(ctx, list):  # multiple inputs: one context per choice, one shared continuation
            answer = str(target)
            gold = text
        else:
            gold = target if isinstance(target, int) else (
                choices.index(target) if target in choices else choices.index(str(target).strip()))
            answer = choices[gold]
        delimiter = compat.continuation_delimiter(task, settings)
    elif output_type == "loglikelihood":
        answer, delimiter = str(target), ""
    else:
        answer, delimiter = str(target), compat.continuation_delimiter(task, settings)
    if isinstance(ctx, list):
        ctx = ctx[gold]
    until = (cfg.generation_kwargs or {}).get("until") if output_type == "generate_until" else None
    until = [until] if isinstance(until, str) else (until or [])
    if isinstance(text, int):  # doc_to_text may index choices (winogrande-style); embed the choice text
        text = task.doc_to_choice(doc)[text]
    return Example(prompt=str(ctx), text=str(text), target=f"{delimiter}{answer}", answer=answer,
                   stop=until[0] if until else None)


def task_data(name: str, task, n: int, seed: int, settings: compat.PromptSettings | None = None) -> TaskData:
    docs, source, split, ids = adaptation_docs(task, n, seed)
    settings = settings or compat.PromptSettings()
    seed_of_draw = docs[0].get("adapt_seed") if docs and isinstance(docs[0], dict) else None
    return TaskData(name, task, [format_example(task, d, settings) for d in docs], source, split,
                    compat.scored_split(task), ids, seed_of_draw)
