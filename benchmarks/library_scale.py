"""Hub-scale LoRA libraries (issue #20): what N adapters cost to open, index, hold and route over.

    python -m benchmarks.library_scale            # N = 100, 1000, 2000, 5000
    python -m benchmarks.library_scale --quick    # N = 50, 200, 500
    python -m benchmarks.library_scale --n 100,2000 --workdir /tmp/ls --device cuda

Synthetic rank-8 q,v adapters (`benchmarks.common.make_library`, each with 5 texts of its own topic)
on a random 4-layer, hidden-256 Llama. Each N is measured in fresh processes (timings and resident
memory of one open, not of a warmed-up interpreter):

- open cold: `LoraLibrary.open` with no digest cache (every weight file read and hashed once; the
  files themselves are in the OS page cache, as right after a download);
- open warm: a new process opening it again (digests cached: no weight file read);
- RSS: the process's resident memory right after the cold open, above the same process with the
  model loaded, as a multiple of the library's file bytes (target <= 1.2);
- index: `build_index` (`--embedder`, default the hashing embedder: the encoder is not what scales);
- lm-eval run: `--model ilora` strategy=retrieve_fuse (top_k 20, one composition per document) on a
  24-document multiple-choice task, in-process; device bytes: what the composed layers hold on the
  device after it (resident adapters + composed factors) vs the whole library on the device; the
  same for a run of one document (its 20 adapters);
- routing: per-document CPU time of the strategy's routing (embed, similarities to N centroids,
  top-k, register) over 200 new documents, best of 7.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Corpus, ModelSpec, cli_main, machine, make_library, make_model, table, workdir

DEFAULT_N = (100, 1000, 2000, 5000)
QUICK_N = (50, 200, 500)
N_DOCS = 24
TOP_K = 20
SPEC = ModelSpec(hidden=256, layers=4, vocab=8000)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.library_scale", description=__doc__.split("\n")[0])
    p.add_argument("--n", help="comma-separated library sizes (default: %s)" % ",".join(map(str, DEFAULT_N)))
    p.add_argument("--quick", action="store_true", help="N = %s" % ",".join(map(str, QUICK_N)))
    p.add_argument("--workdir", help="keep the model, libraries and caches here (default: a temporary folder)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--embedder", default="hashing", help="index and routing embedder (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the measured processes")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one measurement as JSON
    return p.parse_args(argv)


# ------------------------------------------------------------------ building
def build(root: Path, sizes) -> tuple[Path, dict[int, Path]]:
    base = root / "base"
    model = None
    if not (base / "config.json").is_file():
        model = make_model(base, SPEC)
    libs = {}
    for n in sizes:
        lib = root / f"lib_{n}"
        if not (lib / ".complete").is_file():
            if model is None:
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(base)
            shutil.rmtree(lib, ignore_errors=True)
            make_library(model, "base", lib, Corpus(SPEC.vocab, n), n, rank=8, targets="qv")
            (lib / ".complete").write_text("")
        libs[n] = lib
    write_task(root / "tasks", max(sizes))
    return base, libs


def write_task(d: Path, n_topics: int) -> None:
    """24 documents, each from another adapter topic, answered yes/no by log-likelihood."""
    d.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(SPEC.vocab, n_topics)
    rng = random.Random(0)
    with open(d / "scale_docs.jsonl", "w") as fh:
        for i in range(N_DOCS):
            fh.write(json.dumps({"input": corpus.text(rng.randrange(n_topics), 16, rng=rng), "target": i % 2}) + "\n")
    (d / "scale_mc.yaml").write_text("\n".join([
        "task: scale_mc", "dataset_path: json", "dataset_kwargs:", "  data_files:",
        f"    test: {d / 'scale_docs.jsonl'}", "test_split: test", "output_type: multiple_choice",
        'doc_to_text: "{{input}}"', "doc_to_choice: [\"no\", \"yes\"]", "doc_to_target: target",
        "metric_list:", "  - metric: acc"]) + "\n")


# ------------------------------------------------------------------ one measurement (a fresh process)
def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


def child(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from ilora_eval.library import LoraLibrary

    if args.threads:
        torch.set_num_threads(args.threads)
    mode, n, root = args.child.split(":", 2)
    root, n = Path(root), int(n)
    lib, base = root / f"lib_{n}", root / "base"
    AutoModelForCausalLM.from_pretrained(base)  # the model, as a run holds it
    before = _proc_status()["VmRSS"]
    t0 = time.perf_counter()
    library = LoraLibrary.open(lib, progress=False)
    out = {"open_s": time.perf_counter() - t0, "rss_open": _proc_status()["VmRSS"] - before}
    if mode == "cold":
        return out
    from ilora_eval.embeddings import load_embedder
    from ilora_eval.library_index import build_index

    emb = load_embedder(args.embedder)
    shutil.rmtree(library.index_dir, ignore_errors=True)
    t0 = time.perf_counter()
    build_index(library, emb, progress=False)
    out["index_s"] = time.perf_counter() - t0
    out.update(lm_eval_run(args, base, lib, root))
    return out


def lm_eval_run(args, base: Path, lib: Path, root: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from ilora_eval.composition import composed_modules
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    lm = IloraLM(pretrained=str(base), library=str(lib), strategy="retrieve_fuse", top_k=TOP_K, embedder=args.embedder,
                 device=args.device, batch_size=8, progress=False)
    tm = TaskManager(include_path=str(root / "tasks"), include_defaults=False)  # indexing lm-eval's own tasks: not ours to time
    t0 = time.perf_counter()
    simple_evaluate(model=lm, tasks=["scale_mc"], task_manager=tm)
    out = {"run_s": time.perf_counter() - t0}
    layers = composed_modules(lm._model)
    per_adapter = sum(m.factors_A[0].numel() * m.factors_A.element_size() + m.factors_B[0].numel() * m.factors_B.element_size()
                      for m in layers if m.factors_A.shape[0])
    out["device_bytes"] = sum(m.device_bytes() for m in layers)
    out["resident"] = len(lm.state.slots)
    out["used"] = len({i for c in lm.state.compositions for i in c.indices})
    out["all_bytes"] = per_adapter * len(lm.library)
    # one document: the device holds its top_k adapters, whatever N
    one = IloraLM(pretrained=str(base), library=str(lib), strategy="retrieve_fuse", top_k=TOP_K, embedder=args.embedder,
                  device=args.device, batch_size=8, progress=False)
    simple_evaluate(model=one, tasks=["scale_mc"], task_manager=tm, limit=1)
    out["one_resident"] = len(one.state.slots)
    out["one_bytes"] = sum(m.device_bytes() for m in composed_modules(one._model))
    del one
    # routing alone: new documents each repeat (no embedding cache hits)
    corpus = Corpus(SPEC.vocab, len(lm.library), seed=1)
    rng = random.Random(1)
    strategy = lm.router.strategy
    strategy.route(None, [corpus.text(0, 16, rng=rng)])  # centroids loaded once, as in a run
    times = []
    for _ in range(7):
        docs = [corpus.text(rng.randrange(len(lm.library)), 16, rng=rng) for _ in range(200)]
        # this process's CPU time, best of 7: on a shared machine wall time mostly measures the neighbours
        t0 = time.process_time()
        for r in strategy.route(None, docs):
            lm.state.register(r.composition)
        times.append((time.process_time() - t0) / len(docs))
    out["route_ms"] = min(times) * 1e3
    return out


def measure(root: Path, mode: str, n: int, args) -> dict:
    env = dict(os.environ, ILORA_EVAL_CACHE=str(root / "cache"), TQDM_DISABLE="1")
    if mode == "cold":
        shutil.rmtree(root / "cache" / "library-digests", ignore_errors=True)
    cmd = [sys.executable, "-m", "benchmarks.library_scale", "--child", f"{mode}:{n}:{root}", "--device", args.device,
           "--embedder", args.embedder] + (["--threads", str(args.threads)] if args.threads else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise SystemExit(f"measurement {mode} N={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ the table
@dataclass
class Result:
    text: str
    ratio_line: str
    rows: list


def file_bytes(lib: Path) -> int:
    return sum(f.stat().st_size for f in lib.glob("*/adapter_model.safetensors"))


def run(args) -> Result:
    sizes = [int(x) for x in args.n.split(",")] if args.n else list(QUICK_N if args.quick else DEFAULT_N)
    with workdir(args.workdir, "library_scale_") as root:
        base, libs = build(root, sizes)
        rows = []
        for n in sizes:
            cold = measure(root, "cold", n, args)
            warm = measure(root, "warm", n, args)
            fb = file_bytes(libs[n])
            rows.append({"n": n, "file_mib": fb / 2 ** 20, "cold_s": cold["open_s"], "warm_s": warm["open_s"],
                         "rss_ratio": cold["rss_open"] / fb, "rss_mib": cold["rss_open"] / 2 ** 20, **warm})
    first = rows[0]
    headers = ["N", "files MiB", "open cold s", "open warm s", "RSS after open MiB (x files)", "index s",
               "lm-eval run s", "adapters on device / used", "device MiB (whole library)",
               "1 document: adapters, device MiB", "routing ms/doc (x N0)"]
    body = [[r["n"], r["file_mib"], r["cold_s"], r["warm_s"], f"{r['rss_mib']:.1f} ({r['rss_ratio']:.2f}x)",
             r["index_s"], r["run_s"], f"{r['resident']} / {r['used']}",
             f"{r['device_bytes'] / 2 ** 20:.2f} ({r['all_bytes'] / 2 ** 20:.1f})",
             f"{r['one_resident']}, {r['one_bytes'] / 2 ** 20:.2f}",
             f"{r['route_ms']:.3f} ({r['route_ms'] / first['route_ms']:.2f}x)"] for r in rows]
    text = (f"Library scale ({machine()}; device {args.device}; embedder {args.embedder}; "
            f"rank-8 q,v adapters on a {SPEC.layers}-layer h{SPEC.hidden} Llama)\n\n" + table(headers, body))
    last = rows[-1]
    ratio = (f"N {first['n']} -> {last['n']}: warm open x{last['warm_s'] / first['warm_s']:.1f}, "
             f"RSS after open {max(r['rss_ratio'] for r in rows):.2f}x file bytes at most, "
             f"device bytes {last['device_bytes'] / last['all_bytes']:.3f} of the whole library at N={last['n']}, "
             f"routing per document x{last['route_ms'] / first['route_ms']:.2f}")
    return Result(text, ratio, rows)


def main(argv=None):
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args)))
        return None
    return cli_main(run, lambda _: args)


if __name__ == "__main__":
    main()
