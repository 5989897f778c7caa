"""Weight-search wall time: iLoraComp's K per-example searches run one after another versus in lock-step.

    python -m benchmarks.search --quick

Both arms run the package's own code on the same TargetScorer (real cross-entropy of the adaptation
targets through the per-row layer of a random Llama):
  sequential  K separate `nevergrad` `minimize` runs (make_optimizer, the same seeds); every candidate is
              scored alone: one forward of the n_adapt example rows per step, K × budget forwards.
  lock-step   `learn_weights` -> `run_lockstep`: each step asks all K searches, scores the K candidates
              in ONE forward of K × n_adapt rows, tells each; budget forwards.
Each search optimises the weights of its example's top_k adapters (cosine of the example's text+target
to the library centroids, as the `ilora` strategy picks them) on the loss of ALL n_adapt examples
(mean target cross-entropy + l1·mean|w|, loss="mean": the speed is the same under the package's
default loss="lorahub"). The weights must come out
identical; the last line gives the speed-up (median over repeats of sequential / lock-step time).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import (cli_main, workdir, Corpus, MemProbe, ModelSpec, machine, make_library, make_model, mb, median,
                               set_threads, table, timed)


@dataclass
class SearchBenchConfig:
    model: ModelSpec = field(default_factory=lambda: ModelSpec(hidden=64, layers=2, vocab=1000))
    library: int = 32
    rank: int = 8
    targets: str = "qv"
    searches: int = 5  # K: one per adaptation example (iLoraComp)
    n_adapt: int = 5  # examples scored by every search
    top_k: int = 20
    budget: int = 40
    l1: float = 0.05  # weight of the mean |w| term (LoraHub's 0.05)
    loss: str = "mean"  # mean | lorahub (LoraHub's objective: targets with their stop, CE / n_adapt)
    prompt: int = 32  # prompt tokens of an adaptation example
    target: int = 3  # target tokens
    repeats: int = 3
    device: str = "cpu"
    threads: int | None = 1
    clock: str = "cpu"
    seed: int = 1
    workdir: str | None = None
    verbose: bool = True


QUICK = dict(repeats=3)


@dataclass
class SearchResult:
    cfg: SearchBenchConfig
    times: dict  # arm -> [{"wall", "cpu"}]
    ratios: list  # per repeat {"wall", "cpu"}: sequential / lock-step
    peaks: dict  # arm -> transient bytes
    weights: dict  # arm -> [np.ndarray per search]
    losses: dict  # arm -> [final loss per search]
    base_loss: float
    forwards: dict  # arm -> forward passes per run
    identical: bool
    text: str = ""
    ratio_line: str = ""

    def seconds(self, arm: str, clock: str | None = None) -> float:
        return median([t[clock or self.cfg.clock] for t in self.times[arm]])

    def speedup(self, clock: str | None = None) -> float:
        return median([r[clock or self.cfg.clock] for r in self.ratios])


class SearchBench:
    def __init__(self, cfg: SearchBenchConfig, root: Path):
        from ilora_eval.adaptation import Example
        from ilora_eval.model_wrappers.ilora_lm import IloraLM
        from ilora_eval.scoring import TargetScorer
        from ilora_eval.strategies.base import top_k
        from ilora_eval.strategies.learned import SearchArgs, SearchJob

        self.cfg = cfg
        model_dir, lib_dir = root / "search-llama", root / "library"
        base = make_model(model_dir, cfg.model)
        corpus = Corpus(cfg.model.vocab, cfg.library, seed=cfg.seed)
        make_library(base, model_dir.name, lib_dir, corpus, cfg.library, cfg.rank, cfg.targets, seed=cfg.seed + 100)
        del base
        # the search batches rows like lm-eval's --batch_size: one lock-step step of all searches fits
        self.lm = IloraLM(pretrained=str(model_dir), library=str(lib_dir), strategy="base", embedder="hashing",
                          progress=False, device=cfg.device, dtype=cfg.model.dtype,
                          batch_size=cfg.searches * cfg.n_adapt)
        self.scorer = TargetScorer(self.lm._scoring_model(), self.lm.state)
        rng = random.Random(cfg.seed + 3)
        self.examples = []
        for k in range(cfg.n_adapt):
            text = corpus.text(k, cfg.prompt, rng=rng)
            self.examples.append(Example(prompt=text, text=text, target=" " + corpus.random_words(cfg.target, rng)))
        cents = self.lm.router.centroids()
        full = self.lm.router.embed([e.text + e.target for e in self.examples])
        self.jobs = []
        for k in range(cfg.searches):  # as IloraStrategy._fit picks them (order=desc)
            picked = [int(i) for i in top_k(full[k % len(full)] @ cents.T, min(cfg.top_k, cfg.library))]
            self.jobs.append(SearchJob(f"example {k}", picked, self.examples, cfg.seed))
        self.args = SearchArgs(n_adapt=cfg.n_adapt, budget=cfg.budget, l1=cfg.l1, loss=cfg.loss, seed=cfg.seed)
        self.args.validate()
        self.env = types.SimpleNamespace(score=self.scorer, progress=False)
        for ex in self.examples:  # tokenisation is cached by the scorer: do it before timing
            self.scorer.encode(ex, self.args.loss)

    def sequential(self) -> list[np.ndarray]:
        from ilora_eval.composition import Composition
        from ilora_eval.search import l1_penalty, make_optimizer

        sc = self.args
        out = []
        for job in self.jobs:
            opt = make_optimizer(len(job.indices), job.seed, sc)

            def loss(w, job=job):
                ce = self.scorer([Composition.of(job.indices, w)], [job.examples], self.args.loss)[0]
                return ce + l1_penalty(w, sc)

            out.append(np.asarray(opt.minimize(loss).value, dtype=np.float64))
        return out

    def lockstep(self) -> list[np.ndarray]:
        from ilora_eval.strategies.learned import learn_weights

        return learn_weights(self.jobs, self.args, self.env)

    def final_losses(self, weights) -> list[float]:
        from ilora_eval.composition import Composition
        from ilora_eval.search import l1_penalty

        comps = [Composition.of(j.indices, w) for j, w in zip(self.jobs, weights)]
        losses = self.scorer(comps, [j.examples for j in self.jobs], self.args.loss)
        return [loss + l1_penalty(w, self.args) for loss, w in zip(losses, weights)]


def run(cfg: SearchBenchConfig) -> SearchResult:
    set_threads(cfg.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with workdir(cfg.workdir, "ilora-search-bench-") as root:
        return measure(SearchBench(cfg, root))


def measure(bench: SearchBench) -> SearchResult:
    cfg = bench.cfg
    log = print if cfg.verbose else (lambda *a, **k: None)
    arms = {"sequential": bench.sequential, "lock-step": bench.lockstep}
    probe = MemProbe(cfg.device)
    weights, peaks = {}, {}
    t0 = time.perf_counter()
    for fn in arms.values():  # warm-up: first-call costs (imports, threads, allocator) stay out
        fn()
    for arm, fn in arms.items():  # untimed: memory (the probe trims the heap first) and the weights
        _, peaks[arm], weights[arm] = timed(fn, cfg.device, probe)
    log(f"# warm-up + memory pass {time.perf_counter() - t0:.1f}s")
    times, ratios = {a: [] for a in arms}, []
    for rep in range(cfg.repeats):
        order = list(arms) if rep % 2 == 0 else list(arms)[::-1]
        got = {}
        for arm in order:
            got[arm], _, w = timed(arms[arm], cfg.device)
            times[arm].append(got[arm])
            if any(not np.array_equal(a, b) for a, b in zip(w, weights[arm])):
                raise AssertionError(f"{arm}: a repeat gave other weights than the first run")
        ratios.append({c: got["sequential"][c] / got["lock-step"][c] for c in ("wall", "cpu")})
        log(f"# repeat {rep + 1}/{cfg.repeats}: sequential {got['sequential']['wall']:.1f}s, "
            f"lock-step {got['lock-step']['wall']:.1f}s (wall)")
    identical = all(np.array_equal(a, b) for a, b in zip(weights["sequential"], weights["lock-step"]))
    losses = {arm: bench.final_losses(w) for arm, w in weights.items()}
    base = bench.final_losses([np.zeros(len(j.indices)) for j in bench.jobs])
    res = SearchResult(cfg, times, ratios, peaks, weights, losses, float(np.mean(base)),
                       {"sequential": cfg.searches * cfg.budget, "lock-step": cfg.budget}, identical)
    res.text, res.ratio_line = report(res)
    return res


def report(res: SearchResult) -> tuple[str, str]:
    cfg = res.cfg
    s = cfg.model.resolved()
    other = "wall" if cfg.clock == "cpu" else "cpu"
    lines = [
        f"## search: {cfg.searches} searches (iLoraComp, one per adaptation example) × budget {cfg.budget}, "
        f"top_k={cfg.top_k} of {cfg.library} rank-{cfg.rank} adapters on {cfg.targets}, each scored on "
        f"{cfg.n_adapt} examples (~{cfg.prompt}+{cfg.target} tokens); loss = mean target CE"
        f"{' / n_adapt' if cfg.loss == 'lorahub' else ''} + {cfg.l1}·mean|w| (loss={cfg.loss}); NGOpt, one worker "
        f"(Cobyla)",
        f"Llama h{s.hidden}×{s.layers} layers, vocab {s.vocab}, {cfg.model.dtype}, {cfg.device}; median of "
        f"{cfg.repeats} repeats, ratios on {cfg.clock} time; {machine()}",
        "",
    ]
    rows = []
    for arm in ("sequential", "lock-step"):
        rows.append([arm, res.forwards[arm], cfg.n_adapt * (cfg.searches if arm == "lock-step" else 1),
                     res.seconds(arm), res.seconds(arm, other), mb(res.peaks.get(arm)),
                     " ".join(f"{x:.4f}" for x in res.losses[arm])])
    lines.append(table(["arm", "forwards", "rows per forward", f"s ({cfg.clock})", f"s ({other})",
                        "transient tensor peak MB", "final loss per search"], rows))
    lines.append("")
    lines.append(f"loss with all weights 0 (base model): {res.base_loss:.4f}; weights identical: {res.identical}; "
                 f"max |w| per search: " + " ".join(f"{np.abs(w).max():.3f}" for w in res.weights["lock-step"]))
    status = "ok" if res.speedup() >= 1.5 else "MISSED"
    lines.append(f"targets: lock-step speed-up {res.speedup():.2f}x ≥ 1.5 {status}; identical weights "
                 f"{'ok' if res.identical else 'MISSED'}")
    line = (f"ratios: sequential/lock-step {res.speedup():.2f}x ({cfg.clock} time), {res.speedup(other):.2f}x "
            f"({other}) | weights identical {res.identical} | final loss seq {np.mean(res.losses['sequential']):.4f} "
            f"lock {np.mean(res.losses['lock-step']):.4f} (base {res.base_loss:.4f})")
    return "\n".join(lines), line


def parse(argv=None) -> SearchBenchConfig:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"CPU setting of about a minute: {QUICK}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--library", type=int, default=32)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="qv", choices=("qv", "all"))
    p.add_argument("--searches", type=int, default=5)
    p.add_argument("--n-adapt", type=int, default=5)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--budget", type=int, default=40)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--target", type=int, default=3)
    p.add_argument("--l1", type=float, default=0.05)
    p.add_argument("--loss", choices=("mean", "lorahub"), default="mean")
    p.add_argument("--repeats", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads (default 1 on CPU; 0: torch's default)")
    p.add_argument("--clock", choices=("wall", "cpu"), help="default: cpu on a 1-thread CPU run, else wall")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir")
    a = p.parse_args(argv)
    threads = (a.threads if a.threads is not None else 1) or None
    clock = a.clock or ("cpu" if a.device == "cpu" and threads == 1 else "wall")
    return SearchBenchConfig(
        model=ModelSpec(hidden=a.hidden, layers=a.layers, vocab=a.vocab, dtype=a.dtype, seed=a.seed),
        library=a.library, rank=a.rank, targets=a.targets, searches=a.searches, n_adapt=a.n_adapt,
        top_k=min(a.top_k, a.library), budget=a.budget, l1=a.l1, loss=a.loss, prompt=a.prompt, target=a.target,
        repeats=a.repeats or (QUICK["repeats"] if a.quick else 5), device=a.device, threads=threads, clock=clock,
        seed=a.seed, workdir=a.workdir)


def main(argv=None) -> SearchResult:
    return cli_main(run, parse, argv)


if __name__ == "__main__":
    main()
