"""lm_eval_compat: the supported range, and each internal that differs between lm-eval releases,
read through the installed lm-eval and through a stand-in of the other release's shape."""

import textwrap

import pytest
import yaml

import tiny
from ilora_eval import lm_eval_compat as compat
from ilora_eval.errors import IloraError


@pytest.mark.parametrize("version,release", [("0.4.13", (0, 4, 13)), ("0.4.14.dev0+g12ab", (0, 4, 14)),
                                             ("0.4.9.2", (0, 4, 9)), ("0.5.0rc1", (0, 5, 0)), ("unknown", None)])
def test_release_numbers(version, release):
    assert compat._release(version) == release


def test_installed_lm_eval_is_served():
    compat.check_version()


@pytest.mark.parametrize("version,served", [("0.4.8", False), ("0.4.10", False), ("0.4.11", True),
                                            ("0.4.14.dev0", True), ("0.5.0", False), ("1.0", False),
                                            ("unknown", False)])
def test_range_refusal_is_one_line(monkeypatch, version, served):
    import lm_eval

    monkeypatch.setattr(lm_eval, "__version__", version)
    if served:
        compat.check_version()
        return
    with pytest.raises(IloraError) as err:
        compat.check_version()
    message = str(err.value)
    assert "\n" not in message and f"lm-eval {version} is installed" in message
    assert "pip install 'lm-eval>=0.4.11,<0.5'" in message


def test_a_missing_internal_is_named(monkeypatch):
    from lm_eval.api import registry

    monkeypatch.delattr(registry, "model_registry")
    with pytest.raises(IloraError, match=r"lacks lm_eval.api.registry.model_registry, which ilora-eval reads"):
        compat.check_version()


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("pack")
    for name in ("cmp_a", "cmp_b"):
        tiny.write_task(root, name)
    (root / "cmp_group.yaml").write_text("group: cmp_group\ntask: [cmp_a, cmp_b]\n")
    return root


def test_load_tasks_flattens_a_group_with_the_installed_lm_eval(pack):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(pack), include_defaults=False)
    got = compat.load_tasks(manager, ["cmp_group"])
    assert sorted(got) == ["cmp_a", "cmp_b"]
    assert [got[n].config.task for n in sorted(got)] == ["cmp_a", "cmp_b"]
    with pytest.raises(KeyError):
        compat.load_tasks(manager, ["cmp_nope"])


class _Task:
    def __init__(self, name):
        self.name = name


class _OldManager:
    """A TaskManager of lm-eval <= 0.4.12: no `load`; `load_task_or_group` nests a group's tasks
    under the group's key and may pair a task with its group."""

    def load_task_or_group(self, names):
        assert names == ["grp", "solo"]
        return {"grp_key": {"t1": _Task("t1"), "sub": {"t2": ("sub", _Task("t2"))}}, "solo": _Task("solo")}


def test_load_tasks_flattens_the_nested_shape_of_older_releases():
    got = compat.load_tasks(_OldManager(), ["grp", "solo"])
    assert {k: v.name for k, v in got.items()} == {"t1": "t1", "t2": "t2", "solo": "solo"}


def _yaml_files(tmp_path):
    (tmp_path / "base.yaml").write_text("dataset_path: json\nnum_fewshot: 3\n")
    (tmp_path / "child.yaml").write_text(textwrap.dedent("""\
        include: base.yaml
        task: child
        num_fewshot: 0
        process_docs: !function helpers.keep
    """))
    (tmp_path / "helpers.py").write_text("def keep(docs):\n    return docs\n")
    return tmp_path / "child.yaml"


@pytest.mark.parametrize("release", ["installed", "before _yaml_loader"])
def test_load_yaml_follows_includes_and_functions_as_asked(tmp_path, monkeypatch, release):
    import sys

    if release != "installed":
        from lm_eval import utils

        if not hasattr(utils, "load_yaml_config"):
            pytest.skip("the installed lm-eval has no load_yaml_config to fall back on")
        monkeypatch.setitem(sys.modules, "lm_eval.tasks._yaml_loader", None)  # import fails
    child = _yaml_files(tmp_path)
    raw = child.read_text().replace("!function helpers.keep", "helpers.keep")
    expected_flat = yaml.safe_load(raw)
    flat = compat.load_yaml(child, resolve_func=False, recursive=False)
    assert set(flat) == set(expected_flat) and flat["num_fewshot"] == 0 and "include" in flat
    full = compat.load_yaml(child, resolve_func=True, recursive=True)
    assert full["dataset_path"] == "json" and full["num_fewshot"] == 0 and "include" not in full
    assert callable(full["process_docs"]) and full["process_docs"]([1, 2]) == [1, 2]


def _in_evaluator(code: str, **names):
    """Runs `code` in functions named like lm-eval's evaluator's, in a module named like it."""
    scope = {"__name__": compat.EVALUATOR, **names}
    exec(textwrap.dedent(code), scope)
    return scope["result"]


def test_live_tasks_reads_each_release_shape():
    one, two = _Task("one"), _Task("two")

    class TaskOutput:
        def __init__(self, name, task):
            self.task_name, self.task = name, task

    shapes = {
        "0.4.13 evaluate": ("def evaluate():\n    eval_tasks = {'one': one, 'two': two}\n    return live()\n"
                            "result = evaluate()"),
        "0.4.11 evaluate": ("def evaluate():\n    eval_tasks = [TaskOutput('one', one), TaskOutput('grp', None),"
                            " TaskOutput('two', two)]\n    return live()\nresult = evaluate()"),
        "0.4.13 simple_evaluate": ("def simple_evaluate():\n    loaded = {'tasks': {'one': one, 'two': two}}\n"
                                   "    return live()\nresult = simple_evaluate()"),
        "0.4.11 simple_evaluate": ("def simple_evaluate():\n    task_dict = {'grp': {'one': one}, 'two': two}\n"
                                   "    return live()\nresult = simple_evaluate()"),
    }
    for shape, code in shapes.items():
        got = _in_evaluator(code, one=one, two=two, TaskOutput=TaskOutput, live=compat.live_tasks)
        assert got == {"one": one, "two": two}, shape
    assert compat.live_tasks() is None


def test_run_context_reads_the_run_lm_eval_is_making(pack, tmp_path):
    """Through the installed lm-eval's own simple_evaluate/evaluate frames (their shapes differ
    between releases): what the model is told at its first request is what the run was given."""
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    seen = []

    class Probe(LM):
        def generate_until(self, requests, disable_tqdm=False):
            seen.append(compat.run_context(self))
            return ["" for _ in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise AssertionError("generation task only")

        loglikelihood_rolling = loglikelihood

    tracker = EvaluationTracker(output_path=str(tmp_path / "out"))
    simple_evaluate(model=Probe(), tasks=["cmp_group"], task_manager=TaskManager(include_path=str(pack),
                    include_defaults=False), limit=2, random_seed=7, system_instruction="Be brief.",
                    metadata={"adapt_seed": 3}, evaluation_tracker=tracker)
    assert len(seen) == 1  # one generate_until call for both tasks
    ctx = seen[0]
    assert sorted(ctx.tasks) == ["cmp_a", "cmp_b"] and ctx.tasks["cmp_b"].config.task == "cmp_b"
    assert (ctx.seed, ctx.tracker, ctx.settings.system_instruction) == (7, tracker, "Be brief.")
    assert ctx.metadata["adapt_seed"] == 3
    with pytest.raises(TypeError):
        ctx.metadata["adapt_seed"] = 4  # read once, frozen
    assert compat.run_context(None) == compat.RunContext()  # outside a run: empty
