"""Stock `lm_eval` CLI smokes of an environment: `--model hf`, then `--model ilora` with the
retrieve_fuse and lorahub strategies, on a tiny offline model, LoRA library and task.

    python .ci/smoke.py                 # lm-eval in the supported range: all three runs succeed
    python .ci/smoke.py --unsupported   # outside it: hf succeeds, ilora stops with one line

Prints one line per run and exits 1 when any expectation fails. Used by .ci/run (the oldest
supported set) and for the table in docs/compatibility.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {
    "hf": [],
    "ilora retrieve_fuse": ["strategy=retrieve_fuse", "top_k=2"],
    "ilora lorahub": ["strategy=lorahub", "n_modules=3", "budget=4"],
}


def lm_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "lm_eval", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unsupported", action="store_true",
                    help="the installed lm-eval is outside the supported range: expect ilora's one-line refusal")
    args = ap.parse_args(argv)

    from importlib.metadata import version as installed

    from ilora_eval import testing

    version = installed("lm_eval")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="ilora_smoke_") as tmp:
        root = Path(tmp)
        base, lib, tasks = root / "base", root / "lib", root / "tasks"
        testing.make_model(base, "llama")
        testing.make_library(base, lib, "llama")
        testing.write_task(tasks, "smoke_gen")
        for label, extra in RUNS.items():
            out = root / "out" / label.replace(" ", "_")
            model = "hf" if label == "hf" else "ilora"
            model_args = [f"pretrained={base}"] + ([] if model == "hf" else [f"library={lib}", "embedder=hashing", *extra])
            proc = lm_eval(["--model", model, "--model_args", ",".join(model_args), "--device", "cpu",
                            "--include_path", str(tasks), "--tasks", "smoke_gen", "--batch_size", "4",
                            "--output_path", str(out)], cwd=root)
            refused = model == "ilora" and args.unsupported
            if refused:
                # lm-eval logs its own INFO lines first; ilora's refusal is one line, no traceback
                lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("ilora-eval: error: ")]
                ok = (proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr
                      and proc.stderr.strip().endswith(lines[0]))
                what = f"refused: {lines[0]}" if ok else \
                    f"expected a one-line refusal, got rc={proc.returncode}:\n{proc.stderr[-2000:]}"
            else:
                found = sorted(out.rglob("results_*.json"))
                ok = proc.returncode == 0 and len(found) == 1
                if ok:
                    data = json.loads(found[0].read_text())
                    score = data["results"]["smoke_gen"]["exact_match,none"]
                    strategy = data["config"].get("ilora_strategy")
                    # the results file must say which strategy ran (hf runs record none)
                    ok = strategy == (None if model == "hf" else extra[0].split("=")[1])
                    what = f"ok (exact_match {score:.3f}, {data['config']['model']}" + \
                        (f" strategy {strategy})" if strategy else ")")
                    if not ok:
                        what = f"FAILED: the results record strategy {strategy!r}"
                else:
                    what = f"FAILED rc={proc.returncode}:\n{proc.stderr[-3000:]}"
            failures += not ok
            print(f"lm-eval {version} | --model {label}: {what}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
