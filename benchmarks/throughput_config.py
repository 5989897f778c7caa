"""The throughput benchmark's methods (the arms timed, and the baseline of each) and its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.common import ModelSpec

LM_EVAL = ("hf", "ilora:base", "ilora:retrieve_fuse", "ilora:ilora")
RAW = ("raw:base", "raw:per_row_rf", "raw:peft_rf", "raw:peft_ilora", "raw:one_row_rf")
METHODS = LM_EVAL + RAW
BASELINE = {m: "hf" for m in LM_EVAL} | {m: "raw:base" for m in RAW}
WHAT = {
    "hf": "lm-eval `hf` (baseline)",
    "ilora:base": "lm-eval `ilora` strategy=base (library injected, unused)",
    "ilora:retrieve_fuse": "lm-eval `ilora` retrieve_fuse, one composition per doc",
    "ilora:ilora": "lm-eval `ilora` strategy=ilora, 5 compositions",
    "raw:base": "raw forward/generate, base model (baseline)",
    "raw:per_row_rf": "raw, per-row layer, retrieve_fuse compositions",
    "raw:peft_rf": "raw, PEFT adapter_names, 1 slot per doc",
    "raw:peft_ilora": "raw, PEFT adapter_names, 5 slots",
    "raw:one_row_rf": "raw, compose into 1 PEFT slot, 1 row at a time",
}


@dataclass
class ThroughputConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    library: int = 32
    rank: int = 8
    targets: str = "qv"  # qv | all
    top_k: int = 5  # retrieve_fuse adapters per document
    per_row: int = 20  # adapters in each of ilora's compositions
    compositions: int = 5  # ilora's compositions (one per adaptation example)
    docs: int = 16  # loglikelihood documents
    conts: int = 4  # continuations per document (2-4 tokens each)
    seq: int = 100  # context tokens of a loglikelihood document
    gen_docs: int = 16
    gen_seq: int = 64  # prompt tokens of a generation document
    gen_tokens: int = 16  # greedy tokens generated per document (exactly: min_new_tokens)
    until: str | None = "\n\n"  # stop sequence (None: only EOS, which min_new_tokens keeps out)
    batch: int = 16
    repeats: int = 3
    device: str = "cpu"
    threads: int | None = 2
    methods: tuple[str, ...] = METHODS
    workdir: str | None = None
    seed: int = 0
    clock: str = "wall"  # what the ratios compare: wall | cpu (process CPU time; see README)
    verbose: bool = True


QUICK = dict(docs=8, conts=4, seq=100, gen_docs=16, gen_seq=64, gen_tokens=16, batch=16, repeats=4)
QUICK_METHODS = tuple(m for m in METHODS if m != "ilora:base")  # ilora:base is a diagnostic (~1.0x)



FULL = dict(docs=16, conts=4, seq=100, gen_docs=16, gen_seq=64, gen_tokens=16, batch=16, repeats=3)
