"""Shared by the benchmarks: a random Llama + word-level tokenizer of any size, a library of random
PEFT LoRA adapters written straight to disk, a topic corpus, timing and peak-memory probes, and a
Markdown table printer. Everything is built offline, deterministically from a seed."""

from __future__ import annotations

import contextlib
import os
import tempfile
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ilora_eval.testing import (SPECIALS, linear_shapes, llama_config, make_word_tokenizer, random_init, word,  # noqa: F401
                                write_lora_adapter, write_texts)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def quiet_cli() -> None:
    """For the command-line entry points only: no progress bars (index building, weight loading)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

TARGETS = {
    "qv": ["q_proj", "v_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- model + tokenizer
@dataclass
class ModelSpec:
    hidden: int = 256
    layers: int = 4
    vocab: int = 8000  # total, special tokens included
    heads: int | None = None  # default hidden // 64 (at least 2)
    kv_heads: int | None = None  # default heads (no GQA)
    intermediate: int | None = None  # default 8/3·hidden rounded up to a multiple of 256 (Llama's rule)
    max_positions: int = 2048
    dtype: str = "float32"  # what the checkpoint is saved in
    seed: int = 0

    def resolved(self) -> "ModelSpec":
        heads = self.heads or max(2, self.hidden // 64)
        inter = self.intermediate or -(-int(self.hidden * 8 / 3) // 256) * 256
        return ModelSpec(self.hidden, self.layers, self.vocab, heads, self.kv_heads or heads, inter,
                         self.max_positions, self.dtype, self.seed)


def make_model(path: Path, spec: ModelSpec):
    """A random Llama saved with its (word-level) tokenizer; returns the in-memory model (float32, eval)."""
    from transformers import LlamaForCausalLM

    s = spec.resolved()
    path.mkdir(parents=True, exist_ok=True)
    make_word_tokenizer(path, s.vocab)
    cfg = llama_config(s.vocab, s.hidden, s.intermediate, s.layers, s.heads, s.kv_heads, s.max_positions)
    model = random_init(LlamaForCausalLM, cfg, s.seed).eval()
    model.to(DTYPES[s.dtype]).save_pretrained(path)
    return model.float()


# --------------------------------------------------------------------------- corpus
class Corpus:
    """Pseudo-word topics: adapter i is trained on topic i; documents mix one topic with noise,
    so similarity routing gives each document its own top-k set."""

    def __init__(self, vocab: int, n_topics: int, seed: int = 0, topic_size: int = 40):
        self.rng = random.Random(seed)
        self.n_words = vocab - len(SPECIALS)
        self.topics = [[word(self.rng.randrange(self.n_words)) for _ in range(topic_size)] for _ in range(n_topics)]

    def text(self, topic: int, n_words: int, purity: float = 0.6, rng: random.Random | None = None) -> str:
        rng = rng or self.rng
        out = []
        for _ in range(n_words):
            if rng.random() < purity:
                out.append(rng.choice(self.topics[topic % len(self.topics)]))
            else:
                out.append(word(rng.randrange(self.n_words)))
        return " ".join(out)

    def random_words(self, n: int, rng: random.Random | None = None) -> str:
        rng = rng or self.rng
        return " ".join(word(rng.randrange(self.n_words)) for _ in range(n))


# --------------------------------------------------------------------------- library
def make_library(model, base_name: str, lib: Path, corpus: Corpus, n: int, rank: int = 8, targets: str = "qv",
                 alpha: float | None = None, b_std: float = 0.02, seed: int = 100) -> list[str]:
    """N PEFT LoRA adapters ``aNNN`` with random non-zero A and B, written directly
    (`ilora_eval.testing.write_lora_adapter`), each with a texts.jsonl sample of its topic."""
    shapes = linear_shapes(model, TARGETS[targets])
    alpha = float(alpha if alpha is not None else 2 * rank)
    g = torch.Generator().manual_seed(seed)
    names = []
    for i in range(n):
        name = f"a{i:03d}"
        out = write_lora_adapter(lib / name, shapes, rank, alpha, TARGETS[targets], base_name, g, b_std)
        rng = random.Random(seed + i)
        write_texts(out, [corpus.text(i, 12, purity=1.0, rng=rng) for _ in range(5)])
        names.append(name)
    return names


# --------------------------------------------------------------------------- timing and memory
def cli_main(run, parse, argv=None):
    """A benchmark's entry point: its tables, the wall time, then the ratio line last."""
    quiet_cli()
    t0 = time.perf_counter()
    res = run(parse(argv))
    print(res.text)
    print(f"(wall {time.perf_counter() - t0:.1f}s)")
    print(res.ratio_line, flush=True)
    return res


@contextlib.contextmanager
def workdir(path: str | None, prefix: str):
    """`path` (kept) or a temporary folder (removed afterwards)."""
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class MemProbe:
    """Transient peak of tensor memory during one call, above what was allocated when it started.

    CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats.
    CPU: the same quantity, from the allocation/free events torch's profiler records with
    profile_memory=True (every CPU tensor allocation, in order; the running sum's maximum). Deterministic,
    unlike the process RSS (glibc keeps and reuses freed pages), but it slows the call down: use it only
    on untimed runs. Non-tensor memory (Python objects, tokenizer buffers) is not counted.
    """

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self._prof = None

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():  # kineto prints a line on every start and stop
            self._prof.__enter__()

    def stop(self) -> int | None:
        """Bytes above the starting point at the peak (None where it could not be measured)."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self._base
        prof, self._prof = self._prof, None
        with _quiet_stderr():
            prof.__exit__(None, None, None)
        try:
            events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        except AttributeError:  # private API moved
            return None
        cur = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            cur += e.nbytes()
            peak = max(peak, cur)
        return peak


class _quiet_stderr:
    def __enter__(self):
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def module_bytes(module) -> int:
    return tensor_bytes(list(module.parameters()) + list(module.buffers()))


def timed(fn, device: str, probe: MemProbe | None = None):
    """({"wall": s, "cpu": s}, transient peak bytes or None, fn's result). "cpu" is this process's CPU
    time (all its threads): on a shared machine it leaves out the time other processes held the cores."""
    if probe is not None:
        probe.start()
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    dt = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    peak = probe.stop() if probe is not None else None
    return dt, peak, out


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------- output
def table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def mb(n: int | None) -> float | None:
    return None if n is None else n / 2 ** 20


def machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {os.cpu_count()} logical CPUs visible, torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s)" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
