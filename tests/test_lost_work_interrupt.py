"""Ctrl-C during the weight search ends the process (issue #16.8): nevergrad runs NGOpt's Cobyla in
a non-daemon thread that Python would otherwise wait for at exit, forever."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from ilora_eval.errors import IloraError
from ilora_eval.search import SearchConfig, WeightSearch, run_lockstep

# a bound on a hang, not a speed requirement: the interrupted process needs a second or two
HANG = 120


def optimizer_threads() -> set:
    return {t for t in threading.enumerate() if type(t).__name__ == "_MessagingThread" and t.is_alive()}


def searches(k=3, budget=40):
    return [WeightSearch(4, seed, SearchConfig(budget=budget), f"s{seed}") for seed in range(k)]


def ended(threads) -> bool:
    for t in threads:
        t.join(timeout=30)
    return not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, IloraError])
def test_an_interrupted_or_failed_search_leaves_no_optimizer_thread(failure):
    before = optimizer_threads()
    steps = []

    def score_batch(live, ws):
        steps.append(len(live))
        if len(steps) == 3:
            raise failure("stop")
        return [float((w ** 2).sum()) for w in ws]

    live = searches()
    with pytest.raises(failure):
        run_lockstep(live, score_batch, progress=False)
    started = optimizer_threads() - before
    assert len(started) == 3  # NGOpt did pick the threaded Cobyla, one per search
    assert ended(started)


def test_a_finished_search_leaves_no_optimizer_thread():
    before = optimizer_threads()
    live = searches(budget=5)
    out = run_lockstep(live, lambda ids, ws: [float((w ** 2).sum()) for w in ws], progress=False)
    assert len(out) == 3
    started = optimizer_threads() - before
    assert ended(started)


SCRIPT = textwrap.dedent("""
    import sys, time
    from ilora_eval.search import SearchConfig, WeightSearch, run_lockstep

    def score_batch(live, ws):
        print("step", flush=True)
        time.sleep(0.5)  # a forward pass; the 40 steps outlast the SIGINT
        return [float((w ** 2).sum()) for w in ws]

    # budget 40: NGOpt picks Cobyla, run by nevergrad in a thread (a large budget picks another optimizer)
    run_lockstep([WeightSearch(4, s, SearchConfig(budget=40), f"s{s}") for s in range(3)], score_batch,
                 progress=False)
""")


def test_sigint_during_the_search_ends_the_process():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout.readline().strip() == "step"  # the search is running
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the process still ran {HANG}s after one SIGINT (waiting for nevergrad's threads)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert err.count("KeyboardInterrupt") == 1, err
