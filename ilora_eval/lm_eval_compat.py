"""Everything that reads lm-evaluation-harness internals, in one place.

lm-eval hands a model neither its Task objects, nor the run's prompt settings
(`--apply_chat_template`, `--system_instruction`, `--fewshot_as_multiturn`), nor `--seed`, nor
its EvaluationTracker. They are all locals of `lm_eval.evaluator.simple_evaluate` /
`evaluate`, which are on the call stack whenever lm-eval asks the model for anything, so they
are read from those frames here and nowhere else. A change of lm-eval's internals then breaks
this module only, and `check_version` says so in one line.

Supported: lm-eval >= 0.4.11, < 0.5 (docs/compatibility.md). Inside that range each internal that
differs between releases is found by looking for it (feature detection), never by comparing
version numbers, so a patch release that backports or drops one is served by what it has:
task loading (`TaskManager.load` vs `load_task_or_group`), YAML loading (`lm_eval.tasks._yaml_loader`
vs `lm_eval.utils.load_yaml_config`), `evaluate`'s `eval_tasks` (a dict of Tasks vs a list of
TaskOutputs) and `simple_evaluate`'s `loaded` (vs the nested `task_dict`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ilora_eval.errors import IloraError

# The release range this module has been measured against (docs/compatibility.md): the floor is
# the oldest release measured with the whole lm-eval-facing test suite (0.4.10 is the first with the
# lazy model registry the start-up hook needs, 0.4.9.x and older have a dict of classes); the ceiling
# is the next minor, which may move any internal read here.
FLOOR, CEILING = (0, 4, 11), (0, 5)
RANGE = ">=0.4.11,<0.5"
EVALUATOR = "lm_eval.evaluator"


def _release(version: str) -> tuple[int, ...] | None:
    """(0, 4, 13) from "0.4.13", "0.4.14.dev0+g1234" or "0.4.13rc1"; None when unreadable."""
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) if parts else None


def _missing_feature() -> str | None:
    """The first internal this module reads that the installed lm-eval lacks, named."""
    from lm_eval.api import registry

    # (lm_eval.tasks is not imported for a check here: that alone takes seconds; load_tasks reads
    # whichever TaskManager method exists)
    if not hasattr(getattr(registry, "model_registry", None), "register"):
        return "lm_eval.api.registry.model_registry"
    return None


def check_version() -> None:
    """One line (an IloraError) when the installed lm-eval is outside the supported range."""
    import lm_eval

    version = getattr(lm_eval, "__version__", None)
    if version is None:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        try:
            version = dist_version("lm_eval")
        except PackageNotFoundError:
            version = "unknown"
    release = _release(version)
    fix = f"pip install 'lm-eval{RANGE}'"
    if release is None or not FLOOR <= release < CEILING:
        raise IloraError(f"lm-eval {version} is installed but ilora-eval supports lm-eval {RANGE} "
                         f"(docs/compatibility.md); {fix}")
    missing = _missing_feature()
    if missing is not None:
        raise IloraError(f"lm-eval {version} lacks {missing}, which ilora-eval reads; {fix}")


def _flat_tasks(task_dict: dict) -> dict:
    """{task name: Task} of a nested task dict (lm-eval before 0.4.13: groups map to dicts of their
    subtasks; a leaf may be a (group, Task) pair)."""
    out = {}
    for name, value in task_dict.items():
        if isinstance(value, dict):
            out.update(_flat_tasks(value))
        else:
            if isinstance(value, tuple):
                value = value[-1]
            if value is not None:
                out[name] = value
    return out


def load_tasks(manager, names: list[str]) -> dict:
    """{task name: Task} of the leaf tasks behind `names` (groups and tags expanded) through
    `manager` (a TaskManager). An unknown name raises KeyError, as lm-eval does."""
    if hasattr(manager, "load"):  # 0.4.13+: {"tasks": {name: Task}, "groups": ..., "group_map": ...}
        loaded = manager.load(list(names))
        return dict(loaded["tasks"])
    return _flat_tasks(manager.load_task_or_group(list(names)))


def load_yaml(path, *, resolve_func: bool = True, recursive: bool = True) -> dict:
    """lm-eval's reading of a task YAML (`!function` tags resolved or not, `include:` followed or
    not), with the YAML loader of the installed release."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml as loader  # 0.4.13+
    except ImportError:
        loader = None
    if loader is not None:
        return loader(path, resolve_func=resolve_func, recursive=recursive)
    from lm_eval import utils

    mode = "full" if resolve_func else "simple"
    if recursive:
        return utils.load_yaml_config(str(path), mode=mode)
    import functools

    import yaml

    constructor = functools.partial(utils.import_function, yaml_path=Path(path)) if resolve_func else utils.ignore_constructor

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", constructor)
    with open(path, "rb") as fh:
        return yaml.load(fh, Loader=Loader)  # noqa: S506 (SafeLoader plus the one tag)


def _frame_locals(function: str) -> dict | None:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == function and frame.f_globals.get("__name__") == EVALUATOR:
            return frame.f_locals
        frame = frame.f_back
    return None


def live_tasks() -> dict | None:
    """The Task objects `evaluate` is scoring (CLI include paths and overrides applied)."""
    found = _frame_locals("evaluate")
    tasks = found.get("eval_tasks") if found else None
    if isinstance(tasks, dict):  # 0.4.13+: {name: Task}
        return tasks
    if isinstance(tasks, list):  # before: [TaskOutput], a group's own entry has no task
        return {out.task_name: out.task for out in tasks if getattr(out, "task", None) is not None}
    # after `evaluate` returned (get_model_info is called from simple_evaluate)
    found = _frame_locals("simple_evaluate")
    loaded = found.get("loaded") if found else None
    if isinstance(loaded, dict) and isinstance(loaded.get("tasks"), dict):  # 0.4.13+
        return loaded["tasks"]
    task_dict = found.get("task_dict") if found else None
    if isinstance(task_dict, dict):  # before: nested by group
        return _flat_tasks(task_dict)
    return None


@dataclass(frozen=True)
class PromptSettings:
    """The run's prompt options, as `evaluate` passes them to `Task.build_all_requests`."""

    system_instruction: str | None = None
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False
    chat_template: Callable | None = None


def prompt_settings(lm) -> PromptSettings:
    found = _frame_locals("evaluate") or _frame_locals("simple_evaluate")
    if not found:
        return PromptSettings()
    apply = bool(found.get("apply_chat_template"))
    return PromptSettings(system_instruction=found.get("system_instruction"), apply_chat_template=apply,
                          fewshot_as_multiturn=bool(found.get("fewshot_as_multiturn")),
                          chat_template=getattr(lm, "apply_chat_template", None) if apply else None)


def run_seed() -> int | None:
    """lm-eval's `--seed` (simple_evaluate's random_seed), when a run is in progress."""
    found = _frame_locals("simple_evaluate")
    seed = found.get("random_seed") if found else None
    return int(seed) if seed is not None else None


def run_metadata() -> dict:
    """lm-eval's `--metadata` of the run (task-side switches such as the pack's `adapt_seed`)."""
    found = _frame_locals("simple_evaluate")
    metadata = found.get("metadata") if found else None
    return dict(metadata) if isinstance(metadata, dict) else {}


@dataclass(frozen=True)
class RunContext:
    """What the run is, read from lm-eval's frames in one go (issue #19: one door to lm-eval).

    Take it once, at the model's first request, and hand it down: the readers below it then need
    neither frames nor lm-eval internals, and can be unit-tested with a RunContext built by hand.
    """

    tasks: Mapping[str, Any] | None = None  # the live Task objects by name (None: no run on the stack)
    settings: PromptSettings = PromptSettings()
    seed: int | None = None  # lm-eval's --seed (simple_evaluate's random_seed)
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # lm-eval's --metadata
    tracker: Any = None  # the EvaluationTracker (None without --output_path handling)


def run_context(lm) -> RunContext:
    """The RunContext of the lm-eval run now asking `lm` for something (empty outside a run)."""
    tasks = live_tasks()
    return RunContext(tasks=MappingProxyType(dict(tasks)) if tasks is not None else None,
                      settings=prompt_settings(lm), seed=run_seed(),
                      metadata=MappingProxyType(run_metadata()), tracker=evaluation_tracker())


def scored_split(task) -> str | None:
    """The split whose documents lm-eval scores (`Task.eval_docs`: test, else validation)."""
    cfg = task.config
    if task.has_test_docs():
        return cfg.test_split
    if task.has_validation_docs():
        return cfg.validation_split
    return None


def data_files(task, split: str | None) -> Any:
    """The data files behind a split, when the task names them (`dataset_kwargs.data_files`)."""
    files = (getattr(task.config, "dataset_kwargs", None) or {}).get("data_files")
    if isinstance(files, dict) and split in files:
        return files[split]
    return None


def eval_docs(task) -> list:
    return list(task.eval_docs)


def fewshot_context(task, doc, settings: PromptSettings):
    """The context lm-eval builds for `doc` in this run (few-shot examples, description, system
    instruction, chat template), as if `doc` were scored: like lm-eval does for a scored document
    of its own few-shot pool, `doc` is kept out of its own few-shot examples, so an adaptation
    example never sees its answer. The task's few-shot sampler is left in the state it had."""
    sampler = getattr(task, "sampler", None)
    rnd = getattr(sampler, "rnd", None)
    state = rnd.getstate() if rnd is not None else None
    if sampler is not None:
        sample = sampler.sample

        def sample_without_doc(n, eval_doc=None, df=None, **kw):
            got = sample(n, eval_doc=doc, df=df, **kw)
            if not any(x == doc for x in got):
                return got
            # a sampler that ignores eval_doc (0.4.11's first_n): one more, then `doc` left out
            try:
                more = sample(n + 1, eval_doc=doc, df=df, **kw)
            except (AssertionError, ValueError, IndexError):  # the pool holds no n + 1 documents
                more = got
            return [x for x in more if x != doc][:n]

        sampler.sample = sample_without_doc
    try:
        return task.fewshot_context(doc, task.config.num_fewshot or 0,
                                    system_instruction=settings.system_instruction,
                                    apply_chat_template=settings.apply_chat_template,
                                    fewshot_as_multiturn=settings.fewshot_as_multiturn,
                                    chat_template=settings.chat_template, gen_prefix=task.doc_to_prefix(doc))
    finally:
        if sampler is not None:
            del sampler.sample
        if state is not None:
            rnd.setstate(state)


def continuation_delimiter(task, settings: PromptSettings) -> str:
    """`Task.construct_requests`' delimiter between context and answer (none under a chat template
    unless the task's gen_prefix ends without whitespace)."""
    from lm_eval.api.utils import ends_with_whitespace

    delimiter = task.config.target_delimiter if task.config.target_delimiter is not None else " "
    if settings.apply_chat_template:
        prefix = task.config.gen_prefix
        return delimiter if prefix and not ends_with_whitespace(prefix) else ""
    return delimiter


def task_instances(task) -> list:
    """The requests lm-eval built for a task (empty before `build_all_requests`)."""
    return list(getattr(task, "instances", None) or [])


def evaluation_tracker():
    found = _frame_locals("simple_evaluate")
    return found.get("evaluation_tracker") if found else None


def name_run(suffix: str) -> str | None:
    """Appends `suffix` to the model name lm-eval gives the run's output folder and Hub details,
    so each configuration on one base model gets `OUT/<model>__<suffix>/`. Idempotent."""
    tracker = evaluation_tracker()
    general = getattr(tracker, "general_config_tracker", None)
    if general is None or general.model_name is None:
        return None
    from lm_eval.utils import sanitize_model_name

    if not general.model_name.endswith(f"__{suffix}"):
        general.model_name = f"{general.model_name}__{suffix}"
        general.model_name_sanitized = sanitize_model_name(general.model_name)
    return general.model_name


def after_results_saved(callback: Callable[[Path, str], None]) -> bool:
    """Calls `callback(folder, date_id)` right after lm-eval wrote `results_<date_id>.json` to
    `folder`, so side files sit beside it with the same timestamp. False when this run saves
    nothing (no tracker or no --output_path)."""
    tracker = evaluation_tracker()
    if tracker is None or not getattr(tracker, "output_path", None):
        return False
    if getattr(tracker, "_ilora_after_save", None) is not None:
        tracker._ilora_after_save = callback
        return True
    original = tracker.save_results_aggregated
    tracker._ilora_after_save = callback

    def save_results_aggregated(*args, **kwargs):
        original(*args, **kwargs)
        path = Path(tracker.output_path)
        folder = path.parent if path.suffix == ".json" else path / str(tracker.general_config_tracker.model_name_sanitized)
        tracker._ilora_after_save(folder, tracker.date_id)

    tracker.save_results_aggregated = save_results_aggregated
    return True


@contextlib.contextmanager
def env_report_once():
    """Many evaluations in one process (the demo): lm-eval's environment report, which shells out
    to pip for seconds per run, and its git hash are taken once and reused; restored on exit. On a
    release without them nothing is replaced."""
    import lm_eval.evaluator as evaluator

    add, git_hash = getattr(evaluator, "add_env_info", None), getattr(evaluator, "get_git_commit_hash", None)
    if add is None or git_hash is None:
        yield
        return
    env: dict = {}

    def add_env_info(results):
        if not env:
            probe: dict = {}
            add(probe)
            env.update(probe)
        results.update(json.loads(json.dumps(env)))

    git = git_hash()
    evaluator.add_env_info, evaluator.get_git_commit_hash = add_env_info, (lambda: git)
    try:
        yield
    finally:
        evaluator.add_env_info, evaluator.get_git_commit_hash = add, git_hash
