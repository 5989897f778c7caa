"""Throughput of per-document LoRA composition against the plain base model.

    python -m benchmarks.throughput --quick            # CPU, under 2 minutes
    python -m benchmarks.throughput --device cuda --dtype bfloat16 --hidden 2048 --layers 16 ...

The same lm-eval requests (loglikelihood and generate_until) go through:
  lm-eval level (`HFLM.loglikelihood` / `.generate_until`, batching and tokenisation included):
    hf                    plain `--model hf`                                   (baseline of these rows)
    ilora:base            `--model ilora strategy=base`: library injected, no adapter applied
    ilora:retrieve_fuse   a different top_k composition per document (routes pre-computed)
    ilora:ilora           the `ilora` strategy's routing over 5 fixed compositions of per_row adapters
  raw level (identical batches, fed to the model directly: no lm-eval, no stop-sequence checks):
    raw:base              the base model                                        (baseline of these rows)
    raw:per_row_rf        the per-row layer, retrieve_fuse's compositions
    raw:peft_rf           PEFT `adapter_names`, one pre-built slot per distinct composition (retrieve_fuse)
    raw:peft_ilora        PEFT `adapter_names`, 5 slots (ilora's compositions)
    raw:one_row_rf        naive: compose into one PEFT slot, run one row at a time (retrieve_fuse)
Each repeat times four blocks (lm-eval ll, lm-eval gen, raw ll, raw gen), each as [baseline, methods,
baseline]; a method's ratio is the median over repeats of its time over the mean of the two baseline
runs around it. The last printed line holds the ratios.
"""
# Modules: throughput_config (methods, settings), throughput_workload (requests, ilora's fixed fit),
# throughput_bench (set-up), throughput_arms (what is timed), throughput_memory (resident bytes),
# throughput_report (result, agreement, report); this one measures, and holds the CLI.

from __future__ import annotations

import argparse
import logging
import time

from benchmarks import throughput_arms as arms
from benchmarks import throughput_memory as memory
from benchmarks.common import DTYPES, TARGETS, MemProbe, ModelSpec, cli_main, set_threads, timed, workdir
from benchmarks.throughput_bench import Bench
from benchmarks.throughput_config import (BASELINE, FULL, LM_EVAL, METHODS, QUICK, QUICK_METHODS, RAW,  # noqa: F401
                                          WHAT, ThroughputConfig)
from benchmarks.throughput_report import PAIRS, Result, agreement, report, targets_line  # noqa: F401
from benchmarks.throughput_workload import GEN_DOC_OFFSET, TASK, make_requests, preset_ilora  # noqa: F401


def run(cfg: ThroughputConfig) -> Result:
    set_threads(cfg.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    with workdir(cfg.workdir, "ilora-bench-") as root:
        return measure(Bench(cfg, root))


def measure(bench: Bench) -> Result:
    """Each repeat runs four blocks (lm-eval ll, lm-eval gen, raw ll, raw gen); a block is
    [baseline, its methods in an order rotated per repeat, baseline]."""
    cfg = bench.cfg
    jobs = arms.jobs(bench)
    probe = MemProbe(cfg.device)
    times, paired, peaks, outputs, resident = {}, {}, {}, {}, {}
    t0 = time.perf_counter()
    for m in jobs:  # warm-up on a few rows: first-call costs stay out of the memory and time figures
        for k in ("ll", "gen"):
            memory.clear_caches(bench)
            jobs[m][k](True)
    # untimed pass over all requests: measures each method's peak memory (the probe trims the heap
    # first, which would slow timed runs) and keeps its outputs for the agreement table
    for m in jobs:
        for k in ("ll", "gen"):
            memory.clear_caches(bench)
            _, peak, out = timed(lambda: jobs[m][k](False), cfg.device, probe)
            peaks[(m, k)] = [peak]
            outputs.setdefault(m, {})[k] = out
            resident[m] = max(resident.get(m, 0), memory.resident_bytes(bench, m))
    bench.log(f"# warm-up + memory pass {time.perf_counter() - t0:.1f}s")

    def one(m, k, first):
        memory.clear_caches(bench)  # composition caches start cold, as on a run's first pass
        dt, _, _ = timed(lambda: jobs[m][k](False), cfg.device)
        times.setdefault((m, k), []).append(dt)
        return dt

    blocks = []
    for level, baseline in (("lm-eval", "hf"), ("raw", "raw:base")):
        members = [m for m in jobs if BASELINE[m] == baseline and m != baseline]
        for k in ("ll", "gen"):
            blocks.append((baseline if baseline in jobs else None, members, k))
    for rep in range(cfg.repeats):
        t0 = time.perf_counter()
        for baseline, members, k in blocks[rep % len(blocks):] + blocks[: rep % len(blocks)]:
            shift = rep % max(1, len(members))
            before = one(baseline, k, rep == 0) if baseline else None
            got = {m: one(m, k, rep == 0) for m in members[shift:] + members[:shift]}
            after = one(baseline, k, False) if baseline else None
            if baseline:
                for m, dt in got.items():
                    paired.setdefault((m, k), []).append(
                        {c: dt[c] / max(1e-12, (before[c] + after[c]) / 2) for c in ("wall", "cpu")})
        bench.log(f"# repeat {rep + 1}/{cfg.repeats}: {time.perf_counter() - t0:.1f}s")
    n_comp = {}
    for s in ("retrieve_fuse", "ilora"):
        if s in bench.lms:
            n_comp[s] = len({c for c in bench.compositions(s, bench.ll_reqs + bench.gen_reqs)})
    res = Result(cfg, times, paired, peaks, resident, outputs, bench.routing_times, memory.library_bytes(bench), n_comp,
                 agreement(outputs))
    res.text, res.ratio_line = report(res, bench)
    return res


# --------------------------------------------------------------------------- CLI
def parse(argv=None) -> ThroughputConfig:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"CPU setting, about a minute: {QUICK}, 1 thread, CPU-time ratios (explicit flags win)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--intermediate", type=int)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--library", type=int, default=32, help="adapters in the library (N)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", choices=sorted(TARGETS), default="qv", help="qv: q_proj,v_proj; all: every linear")
    p.add_argument("--top-k", type=int, default=5, help="retrieve_fuse adapters per document")
    p.add_argument("--per-row", type=int, default=20, help="adapters in each ilora composition")
    p.add_argument("--compositions", type=int, default=5)
    for name, help_ in (("docs", "loglikelihood documents"), ("conts", "continuations per document"),
                        ("seq", "loglikelihood context tokens"), ("gen-docs", "generation documents"),
                        ("gen-seq", "generation prompt tokens"), ("gen-tokens", "greedy tokens per document"),
                        ("batch", "batch size (HFLM's, and the raw rows')"), ("repeats", "timed repeats")):
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", type=int, help=f"{help_} (default {FULL[key]}, --quick {QUICK[key]})")
    p.add_argument("--until", default="\n\n", help="stop sequence ('' for none)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 with --quick, else 2; 0: torch's default). On a shared "
                        "machine 2 threads make timings swing 3-8x (see README)")
    p.add_argument("--clock", choices=("wall", "cpu"),
                   help="time the ratios compare (default: cpu on a 1-thread CPU run, else wall)")
    p.add_argument("--methods", help="comma-separated subset of " + ",".join(METHODS) +
                   " (default: all; --quick leaves out ilora:base)")
    p.add_argument("--workdir", help="keep the built model/library here (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sizes = {k: getattr(a, k) if getattr(a, k) is not None else (QUICK if a.quick else FULL)[k] for k in FULL}
    threads = (a.threads if a.threads is not None else 1 if a.quick else 2) or None
    clock = a.clock or ("cpu" if a.device == "cpu" and threads == 1 else "wall")
    spec = ModelSpec(hidden=a.hidden, layers=a.layers, vocab=a.vocab, heads=a.heads, kv_heads=a.kv_heads,
                     intermediate=a.intermediate, dtype=a.dtype, seed=a.seed,
                     max_positions=max(2048, sizes["seq"] + 16, sizes["gen_seq"] + sizes["gen_tokens"] + 16))
    return ThroughputConfig(model=spec, library=a.library, rank=a.rank, targets=a.targets, top_k=a.top_k,
                            per_row=min(a.per_row, a.library), compositions=a.compositions, until=a.until or None,
                            device=a.device, threads=threads, clock=clock,
                            methods=tuple(m for m in a.methods.split(",") if m) if a.methods else
                            QUICK_METHODS if a.quick else METHODS, workdir=a.workdir, seed=a.seed,
                            **sizes)


def main(argv=None) -> Result:
    return cli_main(run, parse, argv)


if __name__ == "__main__":
    main()
