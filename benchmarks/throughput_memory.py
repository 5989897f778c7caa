"""Memory accounting of the throughput benchmark: what each method keeps resident (model, stacked
library, composition caches, PEFT slots), and the composition caches it starts each run without."""

from __future__ import annotations

from benchmarks.common import module_bytes, tensor_bytes
from benchmarks.throughput_bench import Bench


def clear_caches(bench: Bench) -> None:
    from ilora_eval.composition import composed_modules

    for lm in bench.lms.values():
        for m in composed_modules(lm.model):
            m.clear_cache()

def cache_bytes(bench: Bench, strategy: str) -> int:
    from ilora_eval.composition import composed_modules

    mods = composed_modules(bench.lms[strategy].model)
    return tensor_bytes(t for m in mods for f in m._cache.values() for t in f)

def library_bytes(bench: Bench) -> int:
    from ilora_eval.composition import composed_modules

    if not bench.lms:
        return 0
    lm = next(iter(bench.lms.values()))
    return tensor_bytes(t for m in composed_modules(lm.model) for t in (m.lora_A, m.lora_B))

def resident_bytes(bench: Bench, method: str) -> int:
    """Bytes a method keeps resident: its model's parameters and buffers (the stacked library is a
    buffer of the ilora models), the per-row layer's composition caches, and for PEFT the base
    model plus only the slots that method uses (the library is not needed once they are written)."""
    base = module_bytes(bench.hf.model)
    if method in ("hf", "raw:base"):
        return base
    if method.startswith("ilora:") or method == "raw:per_row_rf":
        strategy = "retrieve_fuse" if method == "raw:per_row_rf" else method.split(":")[1]
        return module_bytes(bench.lms[strategy].model) + cache_bytes(bench, strategy)
    if method == "raw:one_row_rf":  # composes from the stacked library on the device
        return base + bench.slot_bytes + tensor_bytes(t for _, a, b in bench.lora_layers for t in (a, b))
    strategy = "retrieve_fuse" if method == "raw:peft_rf" else "ilora"
    used = {bench.slot_of[c] for c in bench.compositions(strategy, bench.ll_reqs + bench.gen_reqs) if c in bench.slot_of}
    return base + len(used) * bench.slot_bytes
