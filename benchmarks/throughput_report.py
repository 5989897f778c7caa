"""The throughput benchmark's result, output agreement checks and Markdown report (the tables,
the targets line and the one-line ratios printed last)."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.common import machine, mb, median, table
from benchmarks.throughput_bench import Bench
from benchmarks.throughput_config import BASELINE, LM_EVAL, METHODS, WHAT, ThroughputConfig


@dataclass
class Result:
    cfg: ThroughputConfig
    times: dict  # (method, kind) -> [{"wall": s, "cpu": s}] per run
    paired: dict  # (method, kind) -> [{"wall": r, "cpu": r}]: per repeat, against that repeat's baseline
    peaks: dict  # (method, kind) -> [transient bytes]
    resident: dict  # method -> bytes
    outputs: dict  # method -> {"ll": [...], "gen": [...]}
    routing: dict  # strategy -> [seconds]
    library_bytes: int
    n_compositions: dict
    agreement: list
    text: str = ""
    ratio_line: str = ""

    def seconds(self, method: str, kind: str, clock: str | None = None) -> float | None:
        return median([t[clock or self.cfg.clock] for t in self.times.get((method, kind), [])])

    def ratio(self, method: str, kind: str, baseline: str, clock: str | None = None) -> float | None:
        """Median over repeats of (method's time / the mean of the baseline runs just before and after
        that repeat's block), so drifting machine load cancels."""
        if method == baseline:
            return 1.0 if (method, kind) in self.times else None
        assert baseline == BASELINE[method], (method, baseline)
        return median([r[clock or self.cfg.clock] for r in self.paired.get((method, kind), [])])

    def peak(self, method: str) -> int | None:
        ps = [p for k in ("ll", "gen") for p in self.peaks.get((method, k), []) if p is not None]
        return self.resident[method] + max(ps) if ps and method in self.resident else None


PAIRS = [
    ("hf", "ilora:base", "same model, no adapter"),
    ("hf", "raw:base", "lm-eval vs raw batching"),
    ("ilora:retrieve_fuse", "raw:per_row_rf", "per-row layer via lm-eval vs raw"),
    ("ilora:retrieve_fuse", "raw:peft_rf", "per-row layer vs PEFT adapter_names"),
    ("ilora:retrieve_fuse", "raw:one_row_rf", "per-row layer vs one row at a time"),
    ("ilora:ilora", "raw:peft_ilora", "ilora's 5 compositions vs PEFT adapter_names"),
    ("hf", "ilora:retrieve_fuse", "adapters change the outputs (must differ)"),
]


def agreement(outputs: dict) -> list[dict]:
    rows = []
    for a, b, what in PAIRS:
        if a in outputs and b in outputs:
            da, db = outputs[a], outputs[b]
            diff = max(abs(x - y) for x, y in zip(da["ll"], db["ll"]))
            same = sum(x == y for x, y in zip(da["gen"], db["gen"]))
            rows.append({"a": a, "b": b, "what": what, "ll_max_abs_diff": diff, "gen_equal": same,
                         "gen_total": len(da["gen"])})
    return rows


def report(res: Result, bench: Bench) -> tuple[str, str]:
    cfg = res.cfg
    s = cfg.model.resolved()
    lines = [
        f"## throughput: Llama h{s.hidden}×{s.layers} layers (heads {s.heads}/{s.kv_heads}, ffn {s.intermediate}), "
        f"vocab {s.vocab}, {cfg.model.dtype}, {cfg.device}; library {cfg.library} × rank {cfg.rank} on {cfg.targets}",
        f"loglikelihood: {len(bench.ll_reqs)} requests ({cfg.docs} docs × {cfg.conts} continuations, ~{cfg.seq}-token "
        f"contexts), batch {cfg.batch}; generate_until: {len(bench.gen_reqs)} docs, {cfg.gen_seq}-token prompts, "
        f"{cfg.gen_tokens} greedy tokens; retrieve_fuse top_k={cfg.top_k} ({res.n_compositions.get('retrieve_fuse')} "
        f"distinct compositions), ilora {cfg.compositions} compositions × {cfg.per_row} adapters "
        f"({res.n_compositions.get('ilora')} used); median of {cfg.repeats} repeats, ratios on {cfg.clock} time; "
        f"{machine()}",
        "",
    ]
    lib = res.library_bytes
    hf_peak = res.peak("hf")
    c = cfg.clock
    headers = ["method", "what", f"ll s ({c})", "ll ×", f"gen s ({c})", "gen ×",
               f"× ll / gen ({'wall' if c == 'cpu' else 'cpu'})", "resident MB", "transient tensor peak MB (ll/gen)",
               "peak MB", "peak / (hf peak + library)"]
    rows = []
    for m in [m for m in METHODS if (m, "ll") in res.times]:
        base = "hf" if m in LM_EVAL else "raw:base"
        pk = res.peak(m)
        tr = [max((p for p in res.peaks[(m, k)] if p is not None), default=None) for k in ("ll", "gen")]
        other = "wall" if cfg.clock == "cpu" else "cpu"
        rows.append([m, WHAT[m], res.seconds(m, "ll"), res.ratio(m, "ll", base),
                     res.seconds(m, "gen"), res.ratio(m, "gen", base),
                     f"{res.ratio(m, 'll', base, other):.2f} / {res.ratio(m, 'gen', base, other):.2f}",
                     mb(res.resident.get(m)),
                     "/".join("—" if t is None else f"{mb(t):.1f}" for t in tr), mb(pk),
                     None if pk is None or hf_peak is None else pk / (hf_peak + (0 if m in ("hf", "raw:base") else lib))])
    lines.append(table(headers, rows))
    lines.append("")
    lines.append(f"stacked library: {mb(lib):.2f} MB; base model: {mb(res.resident.get('hf', 0)):.2f} MB. "
                 "× columns: lm-eval rows against `hf`, raw rows against `raw:base`.")
    if res.routing:
        n_docs = len({r.doc_id for r in bench.ll_reqs + bench.gen_reqs})
        lines.append("")
        lines.append(table(["routing (untimed above)", "documents", "s (median)"],
                           [[f"{k}: embed docs (hashing) + top-k + register", n_docs, median(v)]
                            for k, v in res.routing.items()]))
    if res.agreement:
        lines.append("")
        lines.append(table(["agreement", "", "max abs Δ loglikelihood", "equal generations"],
                           [[f"{r['a']} vs {r['b']}", r["what"], r["ll_max_abs_diff"], f"{r['gen_equal']}/{r['gen_total']}"]
                            for r in res.agreement]))
    lines.append("")
    lines.append(targets_line(res))

    def pair(m, base, label):
        if (m, "ll") not in res.times or (base, "ll") not in res.times:
            return None
        return f"{label} ll {res.ratio(m, 'll', base):.2f}x gen {res.ratio(m, 'gen', base):.2f}x"

    parts = [pair("ilora:retrieve_fuse", "hf", "retrieve_fuse"), pair("ilora:ilora", "hf", "ilora"),
             pair("ilora:base", "hf", "ilora(base)")]
    raw_parts = [pair("raw:per_row_rf", "raw:base", "per_row"),
                 pair("raw:peft_rf", "raw:base", f"peft_adapter_names({res.n_compositions.get('retrieve_fuse')} slots)"),
                 pair("raw:peft_ilora", "raw:base", "peft_adapter_names(5 slots)"),
                 pair("raw:one_row_rf", "raw:base", "one_row")]
    mem = [f"{m.split(':')[1]} {res.peak(m) / (hf_peak + lib):.2f}x" for m in ("ilora:retrieve_fuse", "ilora:ilora")
           if res.peak(m) is not None and hf_peak]
    line = f"ratios vs hf ({cfg.clock} time): " + " | ".join(p for p in parts if p)
    if any(raw_parts):
        line += " || vs raw base forward: " + " | ".join(p for p in raw_parts if p)
    if mem:
        line += " || peak memory vs hf+library: " + " ".join(mem)
    return "\n".join(lines), line


def targets_line(res: Result) -> str:
    checks = []
    for m in ("ilora:retrieve_fuse", "ilora:ilora"):
        for k, limit in (("ll", 1.15), ("gen", 1.2)):
            r = res.ratio(m, k, "hf")
            if r is not None:
                checks.append(f"{m.split(':')[1]} {k} {r:.2f}x ≤ {limit} {'ok' if r <= limit else 'MISSED'}")
        pk, hf_peak = res.peak(m), res.peak("hf")
        if pk is not None and hf_peak:
            r = pk / (hf_peak + res.library_bytes)
            checks.append(f"{m.split(':')[1]} memory {r:.2f}x ≤ 1.10 {'ok' if r <= 1.10 else 'MISSED'}")
    return "targets: " + "; ".join(checks) if checks else "targets: (hf and ilora rows not run)"
