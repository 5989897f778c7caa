"""The recipe's --reference switch (issue #16.13): the reference code's generation (stop at EOS only,
256 new tokens) as lm-eval applies it to the pack's tasks; the default plan is unchanged."""

import argparse


def lm_eval_runs(cmds):
    return [c for c in cmds if "lm_eval" in c]


def parsed_gen_kwargs(cmd) -> dict:
    """The --gen_kwargs of a planned command as lm-eval's own CLI action parses it."""
    from lm_eval._cli.utils import MergeDictAction

    parser = argparse.ArgumentParser()
    parser.add_argument("--gen_kwargs", nargs="+", action=MergeDictAction, default=None)
    i = cmd.index("--gen_kwargs")
    return parser.parse_args(cmd[i:i + 2]).gen_kwargs


def test_reference_switch_stops_generation_at_eos_only(recipe, tmp_path):
    from lm_eval.tasks import TaskManager

    default = lm_eval_runs(recipe.plan(tmp_path, "m", [1, 2], "cpu", "4", None))
    assert default and not any("--gen_kwargs" in c for c in default)
    reference = lm_eval_runs(recipe.plan(tmp_path, "m", [1, 2], "cpu", "4", None, reference=True))
    assert len(reference) == len(default)
    for cmd in reference:
        assert parsed_gen_kwargs(cmd) == {"until": ["</s>"], "max_gen_toks": 256}

    # applied as lm-eval's evaluator applies --gen_kwargs to a task of the pack
    manager = TaskManager(include_path=str(recipe.task_pack()))
    task = manager.load(["bbh_ilora_navigate_raw"])["tasks"]
    task = next(iter(task.values()))
    assert "Q:" in task.config.generation_kwargs["until"]  # the pack's own stop strings
    task.set_config(key="generation_kwargs", value=parsed_gen_kwargs(reference[0]), update=True)
    kwargs = task.config.generation_kwargs
    assert kwargs["until"] == ["</s>"] and kwargs["max_gen_toks"] == 256 and kwargs["do_sample"] is False
