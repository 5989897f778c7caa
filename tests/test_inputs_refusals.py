"""Inputs that used to change results without a word are refused in one line (issue #16.5, 6, 9),
and the files ilora-eval writes honour the umask (issue #16.11)."""

import json
import math
import os
import shutil
import stat
import subprocess
import sys

import pytest

import tiny
from ilora_eval.errors import IloraError
from ilora_eval.library import LoraLibrary
from ilora_eval.strategies import build_config

from test_model import ilora, run, task_manager  # noqa: F401  (fixture)

ALL = ["00_colors", "01_numbers", "02_animals", "03_logic", "04_sorting", "05_questions"]


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


# ---------------------------------------------------------------- exclude= (#16.5)
@pytest.mark.parametrize("exclude, unmatched", [
    ("00_colorz", "'00_colorz'"),  # a typo of one id
    ("00_colors|03_logicc", "'03_logicc'"),  # one good id, one typo: the typo must not pass quietly
    (r"0[7-9]_.*", r"'0[7-9]_.*'"),  # a regex that matches nothing
    (r"0[0-1]_.*|skill_.*", "'skill_.*'"),  # one regex alternative that matches nothing
])
def test_exclude_that_matches_nothing_is_refused(llama, exclude, unmatched):
    _, lib = llama
    with pytest.raises(IloraError) as err:
        LoraLibrary.open(lib, exclude=exclude)
    msg = one_line(err)
    assert f"exclude={exclude!r}: {unmatched} matches no adapter id" in msg
    assert "00_colors, 01_numbers" in msg  # how to see the ids: the message lists them


def test_exclude_typo_suggests_the_close_id(llama):
    _, lib = llama
    with pytest.raises(IloraError, match="did you mean '03_logic'"):
        LoraLibrary.open(lib, exclude="03_logik")


@pytest.mark.parametrize("exclude, kept", [
    ("00_colors|03_logic", ["01_numbers", "02_animals", "04_sorting", "05_questions"]),
    (r"0[0-3]_.*", ["04_sorting", "05_questions"]),
    (r"(00|05)_.*", ALL[1:5]),  # a group spanning `|`: judged as one pattern
    (r"0[0-1]_.*|04_.*", ["02_animals", "03_logic", "05_questions"]),
])
def test_exclude_that_matches_is_applied_and_recorded(llama, exclude, kept):
    _, lib = llama
    library = LoraLibrary.open(lib, exclude=exclude)
    assert library.ids == kept
    assert library.excluded == [n for n in ALL if n not in kept]
    assert LoraLibrary.open(lib).excluded == []


def test_results_config_records_what_was_excluded(llama, task_manager):  # noqa: F811
    base, lib = llama
    res, _ = run(ilora(base, lib, strategy="uniform", exclude="0[2-5]_.*"), task_manager, ["toy_mc"])
    cfg = res["config"]
    assert cfg["ilora_exclude"] == "0[2-5]_.*"
    assert cfg["ilora_excluded"] == ["02_animals", "03_logic", "04_sorting", "05_questions"]
    assert cfg["ilora_library_size"] == 2


# ---------------------------------------------------------------- numbers (#16.6, #16.9)
@pytest.mark.parametrize("strategy, args, match", [
    ("retrieve_fuse", {"temperature": math.nan}, "temperature=nan is not a finite number"),
    ("retrieve_fuse", {"temperature": "nan"}, "temperature=nan is not a finite number"),
    ("retrieve_fuse", {"temperature": 0.0}, r"temperature=0.0 must be > 0"),
    ("retrieve_fuse", {"temperature": -1.0}, r"temperature=-1.0 must be > 0"),
    ("retrieve_fuse", {"top_k": 0}, r"top_k=0 must be >= 1"),
    ("arrow", {"arrow_temperature": math.inf}, "arrow_temperature=inf is not a finite number"),
    ("arrow", {"arrow_k": 0}, r"arrow_k=0 must be >= 1"),
    ("arrow", {"top_k": -1}, r"top_k=-1 must be >= 0"),
    ("lorahub", {"budget": 1.5}, "budget=1.5 is not a whole number"),
    ("lorahub", {"budget": "1.5"}, "budget='1.5' is not a whole number"),
    ("lorahub", {"budget": True}, "budget=True is not a whole number"),
    ("lorahub", {"budget": math.inf}, "budget=inf is not a finite number"),
    ("lorahub", {"budget": 0}, r"budget=0 must be >= 1"),
    ("lorahub", {"bound": 0}, r"bound=0.0 must be > 0"),
    ("lorahub", {"bound": math.nan}, "bound=nan is not a finite number"),
    ("lorahub", {"l1": -0.01}, r"l1=-0.01 must be >= 0"),
    ("lorahub", {"n_modules": 0}, r"n_modules=0 must be >= 1"),
    ("lorahub", {"n_modules": -2}, r"n_modules=-2 must be >= 1"),
    ("lorahub", {"n_adapt": -1}, r"n_adapt=-1 must be >= 1"),
    ("lorahub", {"n_adapt": 0}, r"n_adapt=0 must be >= 1 \(the adaptation examples"),
    ("lorahub", {"seed": -1}, r"seed=-1 must be >= 0"),
    ("ilora", {"top_k": 0}, r"top_k=0 must be >= 1"),
    ("ilora", {"top_k": 2.5}, "top_k=2.5 is not a whole number"),
    ("single_best", {"n_adapt": 0}, r"n_adapt=0 must be >= 1"),
    ("uniform", {"top_k": -3}, r"top_k=-3 must be >= 0"),
])
def test_numbers_that_are_not_numbers_are_refused(strategy, args, match):
    with pytest.raises(IloraError, match=match) as err:
        build_config(strategy, dict(args))
    assert f"strategy={strategy}" in one_line(err) or "model_args" in one_line(err)


def test_whole_floats_and_numeric_strings_are_accepted():
    cfg = build_config("lorahub", {"budget": 2.0, "bound": "0.5", "n_modules": "3", "l1": 0})
    assert (cfg.budget, cfg.bound, cfg.n_modules, cfg.l1) == (2, 0.5, 3, 0.0)
    assert type(cfg.budget) is int and type(cfg.l1) is float
    assert build_config("uniform", {"top_k": 0}).top_k == 0  # 0 means the whole library


@pytest.mark.parametrize("kw, match", [({"check_base": "flase"}, "check_base='flase' is neither true nor false"),
                                       ({"progress": "maybe"}, "progress='maybe' is neither true nor false")])
def test_true_false_model_args_are_checked(llama, kw, match):
    base, lib = llama
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    with pytest.raises(IloraError, match=match):
        IloraLM(pretrained=str(base), library=str(lib), strategy="uniform", device="cpu", **kw)


def test_bad_numbers_are_refused_before_the_model_loads(llama, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    base, lib = llama
    monkeypatch.setattr(HFLM, "__init__", lambda *a, **k: pytest.fail("the model loaded before the check"))
    with pytest.raises(IloraError, match="n_modules=0 must be >= 1"):
        IloraLM(pretrained=str(base), library=str(lib), strategy="lorahub", n_modules=0)


def test_stock_cli_refuses_a_bad_number_in_one_line(llama, tmp_path):
    base, lib = llama
    tiny.write_task(tmp_path / "tasks", "num_mc", "multiple_choice")
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "ilora", "--model_args",
         f"pretrained={base},library={lib},strategy=lorahub,n_modules=-2,fit_cache=false",
         "--include_path", str(tmp_path / "tasks"), "--tasks", "num_mc", "--device", "cpu", "--limit", "2"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ilora-eval: error:")]
    assert lines == ["ilora-eval: error: n_modules=-2 must be >= 1 (adapters drawn from the library); "
                     "fix n_modules= in model_args"]


# ---------------------------------------------------------------- file modes (#16.11)
@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, umask, mask):
    from ilora_eval.util import write_atomic

    umask(mask)
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    write_atomic(tmp_path / "text.txt", "x")
    write_atomic(tmp_path / "bytes.bin", b"x")
    write_atomic(tmp_path / "func.bin", lambda p: open(p, "wb").write(b"x"))
    expected = 0o666 & ~mask
    assert mode(tmp_path / "plain.txt") == expected
    assert {mode(tmp_path / n) for n in ("text.txt", "bytes.bin", "func.bin")} == {expected}


def test_routing_logs_fit_cache_and_index_are_readable_by_others(llama, tmp_path, umask, task_manager):  # noqa: F811
    base, lib = llama
    lib_copy = tmp_path / "lib"
    shutil.copytree(lib, lib_copy, ignore=shutil.ignore_patterns("ilora_index"))
    umask(0o022)
    log, cache = tmp_path / "out" / "routing.jsonl", tmp_path / "fits"
    run(ilora(base, lib_copy, strategy="ilora", top_k=2, budget=2, n_adapt=2, fit_cache=str(cache),
              routing_log=str(log)), task_manager, ["toy_mc"])
    written = [log, *cache.glob("*.json"), *(lib_copy / "ilora_index").iterdir()]
    assert len(written) == 4 and json.loads(log.read_text().splitlines()[0])["task"] == "toy_mc"
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(0o644) for p in written}


def test_negative_lm_eval_seed_is_refused_for_a_learned_strategy(llama, task_manager):  # noqa: F811
    # lm-eval takes any int for --seed; LoraHub's draw and nevergrad need one >= 0
    from lm_eval import simple_evaluate

    base, lib = llama
    with pytest.raises(IloraError, match=r"lm_eval --seed -3 is negative; give a seed >= 0") as err:
        simple_evaluate(model=ilora(base, lib, strategy="lorahub", n_modules=2, budget=2, fit_cache="false"),
                        tasks=["toy_mc"], task_manager=task_manager, random_seed=-3, limit=2)
    one_line(err)
