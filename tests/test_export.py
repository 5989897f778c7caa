"""`ilora-eval export` against an independent computation: lm-eval's `hf` model loading the
exported adapter with PEFT must answer every document as the `ilora` run did."""

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import tiny
from ilora_eval.errors import IloraError

TASKS = ["toy_gen", "toy_mc"]
SERVE = Path(__file__).resolve().parents[1] / "scripts" / "serve" / "serve_vllm.py"


@pytest.fixture(scope="module")
def task_manager(tiny_root):
    from lm_eval.tasks import TaskManager

    d = tiny_root / "export_tasks"
    for name, kind in (("toy_gen", "generate_until"), ("toy_mc", "multiple_choice")):
        tiny.write_task(d, name, kind)
        # test documents that repeat the adaptation inputs, so iLoraComp routes them to
        # different examples' compositions
        adapt = [json.loads(line) for line in (d / f"{name}_adapt.jsonl").read_text().splitlines()]
        rows = [{"input": a["input"], "target": "no" if a["target"] == "yes" else "yes"} for a in adapt]
        (d / f"{name}_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskManager(include_path=str(d))


def same(a: dict, b: dict) -> bool:
    """Two compositions {"adapters", "weights"} compose to the same tensors."""
    def key(c):
        return sorted((n, w) for n, w in zip(c["adapters"], c["weights"]) if w != 0)

    return key(a) == key(b)


@pytest.fixture(scope="module")
def serve():
    spec = importlib.util.spec_from_file_location("serve_vllm", SERVE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def ilora_lm(base, lib, **kw):
    from ilora_eval.model_wrappers.ilora_lm import IloraLM

    kw.setdefault("embedder", "hashing")
    kw.setdefault("batch_size", 4)
    kw.setdefault("fit_cache", "false")
    return IloraLM(pretrained=str(base), library=str(lib), device="cpu", progress=False, **kw)


def save_run(lm, task_manager, out_dir: Path, tasks=TASKS):
    """simple_evaluate, then the files `lm_eval --output_path out_dir --log_samples` writes."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out_dir))
    res = simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager, log_samples=True,
                          evaluation_tracker=tracker)
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=samples)
    for task, rows in samples.items():
        tracker.save_results_samples(task_name=task, samples=copy.deepcopy(rows))
    (results,) = out_dir.rglob("results_*.json")
    return results, res, samples


def export(results, out, **kw):
    from ilora_eval.export import export as run_export

    run_export(results, out, **kw)
    return json.loads((Path(out) / "routes.json").read_text())


def peft_hf(base, adapters: dict[str, Path]):
    """lm-eval's `hf` model with PEFT holding every given adapter folder under its name."""
    from lm_eval.models.huggingface import HFLM

    names = list(adapters)
    lm = HFLM(pretrained=str(base), peft=str(adapters[names[0]]), device="cpu", batch_size=4)
    for name in names:  # HFLM loaded the first as "default"; load every folder under its own name
        lm._model.load_adapter(str(adapters[name]), adapter_name=name)
    lm._model.eval()
    return lm, names[0]


def answer(lm, sample, task):
    """lm-eval's request(s) of one logged sample, answered by `lm`."""
    from lm_eval.api.instance import Instance

    args = [tuple(a) for a in sample["arguments"]]
    if isinstance(args[0][1], dict):
        reqs = [Instance("generate_until", sample["doc"], a, i, (task, sample["doc_id"], 1)) for i, a in enumerate(args)]
        return [[r] for r in lm.generate_until(reqs)]
    reqs = [Instance("loglikelihood", sample["doc"], a, i, (task, sample["doc_id"], 1)) for i, a in enumerate(args)]
    return [[r] for r in lm.loglikelihood(reqs)]


def max_diff(ours, ref) -> float:
    """Largest log-likelihood difference; generations must be equal."""
    worst = 0.0
    for x, y in zip(ours, ref, strict=True):
        x, y = x[0], y[0]
        if isinstance(x, str):
            assert x == y
        else:
            worst = max(worst, abs(float(x[0]) - float(y[0])))
            assert bool(x[1]) == bool(y[1])
    return worst


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_lorahub_export_through_peft_equals_the_ilora_run(kind, request, task_manager, tmp_path):
    base, lib = request.getfixturevalue(kind)
    # loss=mean: on these random adapters LoraHub's objective keeps every weight at 0
    lm = ilora_lm(base, lib, strategy="lorahub", n_modules=4, budget=4, seed=1, loss="mean")
    results, res, samples = save_run(lm, task_manager, tmp_path / "run")
    routes = export(results, tmp_path / "export")
    assert routes["strategy"] == "lorahub" and set(routes["tasks"]) == set(TASKS)
    for task in TASKS:
        folder = tmp_path / "export" / routes["tasks"][task]["adapter"]
        cfg = json.loads((folder / "adapter_config.json").read_text())
        assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and sorted(cfg["target_modules"]) == sorted(tiny.TARGETS[kind])
        learned = res["config"]["ilora_tasks"][task]["learned"]
        assert same(routes["compositions"][routes["tasks"][task]["adapter"]], learned)
        lm, _ = peft_hf(base, {"a": folder})
        worst = 0.0
        for s in samples[task]:
            worst = max(worst, max_diff(answer(lm, s, task), s["resps"]))
        assert worst <= 1e-5, worst
        assert any(w != 0 for w in learned["weights"])


def test_lorahub_export_through_lm_eval_hf_peft(llama, task_manager, tmp_path):
    """The same check through `simple_evaluate(model="hf", model_args="...,peft=DIR")`."""
    from lm_eval import simple_evaluate

    base, lib = llama
    results, _, samples = save_run(ilora_lm(base, lib, strategy="lorahub", n_modules=4, budget=4),
                                   task_manager, tmp_path / "run", ["toy_mc"])
    routes = export(tmp_path / "run", tmp_path / "export")  # the output folder: its newest results file
    folder = tmp_path / "export" / routes["tasks"]["toy_mc"]["adapter"]
    ref = simple_evaluate(model="hf", model_args=f"pretrained={base},peft={folder},device=cpu", batch_size=4,
                          tasks=["toy_mc"], task_manager=task_manager, log_samples=True)
    by_doc = {s["doc_id"]: s for s in ref["samples"]["toy_mc"]}
    plain = simple_evaluate(model="hf", model_args=f"pretrained={base},device=cpu", batch_size=4,
                            tasks=["toy_mc"], task_manager=task_manager, log_samples=True)
    plain_by_doc = {s["doc_id"]: s for s in plain["samples"]["toy_mc"]}
    assert max(max_diff(s["resps"], by_doc[s["doc_id"]]["resps"]) for s in samples["toy_mc"]) <= 1e-5
    assert max(abs(s["resps"][0][0][0] - plain_by_doc[s["doc_id"]]["resps"][0][0][0])
               for s in samples["toy_mc"]) > 1e-3, "the composition must change the answers"


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_ilora_export_each_document_through_its_examples_adapter(kind, request, task_manager, tmp_path, serve):
    base, lib = request.getfixturevalue(kind)
    log = tmp_path / "run" / "routing.jsonl"
    results, res, samples = save_run(ilora_lm(base, lib, strategy="ilora", top_k=3, budget=8, routing_log=str(log)),
                                     task_manager, tmp_path / "run")
    routes = export(results, tmp_path / "export", routing_log=str(log))
    out = tmp_path / "export"
    adapters = {}
    for task in TASKS:
        entry = routes["tasks"][task]
        learned = res["config"]["ilora_tasks"][task]["learned"]["examples"]
        assert all(same(routes["compositions"][f], c) for f, c in zip(entry["examples"], learned, strict=True))
        assert set(entry["documents"]) == {str(s["doc_id"]) for s in samples[task]}
        for row in map(json.loads, log.read_text().splitlines()):
            if row["task"] == task:
                assert entry["documents"][str(row["doc_id"])] == entry["examples"][row["example"]]
        adapters.update({f: out / f for f in entry["examples"]})
    lm, _ = peft_hf(base, adapters)
    worst = 0.0
    for task in TASKS:
        for s in samples[task]:
            lm._model.set_adapter(routes["tasks"][task]["documents"][str(s["doc_id"])])
            worst = max(worst, max_diff(answer(lm, s, task), s["resps"]))
    assert worst <= 1e-5, worst
    # the documents used several examples' compositions
    assert len({f for t in TASKS for f in routes["tasks"][t]["documents"].values()}) >= 2

    # the serving plan: each generation document with the run's prompt, its adapter and answer
    plan, skipped = serve.build_plan(out / "routes.json")
    gen = {s["doc_id"]: s for s in samples["toy_gen"]}
    assert skipped == len(samples["toy_mc"]) and len(plan) == len(gen)
    for item in plan:
        s = gen[item.doc_id]
        assert item.prompt == s["arguments"][0][0] and item.expected == s["resps"][0][0]
        assert item.adapter == out / routes["tasks"]["toy_gen"]["documents"][str(item.doc_id)]
        assert item.until == ["\n"] and item.max_tokens == 4
    files = sorted(results.parent.glob("samples_toy_gen_*.jsonl"))
    assert [i.adapter for i in serve.build_plan(out, files)[0]] == [i.adapter for i in plan]
    assert serve.main([str(out / "routes.json"), "--dry-run"]) == 0  # no vLLM needed for the plan
    with pytest.raises(serve.PlanError, match="belongs to none of the exported tasks"):
        serve.build_plan(out, [results])




def test_per_document_export_of_retrieve_fuse_and_dedup(llama, task_manager, tmp_path):
    """Training-free per-document compositions come from the routing log, found beside the
    results as ilora_routing_<date_id>.jsonl; identical compositions share one folder."""
    base, lib = llama
    log = tmp_path / "routing.jsonl"
    results, _, samples = save_run(ilora_lm(base, lib, strategy="retrieve_fuse", top_k=2, routing_log=str(log)),
                                   task_manager, tmp_path / "run", ["toy_mc"])
    with pytest.raises(IloraError, match="pass --per-document"):
        export(results, tmp_path / "refused")
    date_id = results.stem[len("results_"):]
    (results.parent / f"ilora_routing_{date_id}.jsonl").write_text(log.read_text())
    routes = export(results, tmp_path / "export", per_document=True)
    docs = routes["tasks"]["toy_mc"]["documents"]
    assert set(docs) == {str(s["doc_id"]) for s in samples["toy_mc"]}
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    distinct = {tuple(sorted(zip(r["adapters"], r["weights"]))) for r in rows}
    assert len(routes["compositions"]) == len(distinct) >= 2
    lm, _ = peft_hf(base, {f: tmp_path / "export" / f for f in routes["compositions"]})
    worst = 0.0
    for s in samples["toy_mc"]:
        lm._model.set_adapter(docs[str(s["doc_id"])])
        worst = max(worst, max_diff(answer(lm, s, "toy_mc"), s["resps"]))
    # the log keeps 6 decimals of the softmax weights
    assert worst <= 1e-5, worst

    # uniform over each document's nearest adapter: documents that share it share a folder
    log1 = tmp_path / "routing_uniform.jsonl"
    results1, _, _ = save_run(ilora_lm(base, lib, strategy="uniform", top_k=1, routing_log=str(log1)),
                              task_manager, tmp_path / "run_uniform", ["toy_mc"])
    routes1 = export(results1, tmp_path / "export_uniform", per_document=True, routing_log=str(log1))
    picked = [json.loads(line)["adapters"][0] for line in log1.read_text().splitlines()]
    assert len(routes1["compositions"]) == len(set(picked)) < len(picked)
    assert all(c["weights"] == [1.0] for c in routes1["compositions"].values())


# ---------------------------------------------------------------- from a results config alone


def fake_run(dir_: Path, lib: Path, strategy: str, learned: dict, args=None, **config) -> Path:
    """A results file as an ilora run records it (config only), for export's other paths."""
    from ilora_eval.library import LoraLibrary

    dir_.mkdir(parents=True, exist_ok=True)
    cfg = {"model_args": f"pretrained={lib.parent / 'llama_base'}", "ilora_strategy": strategy, "ilora_args": args or {},
           "ilora_library": str(lib), "ilora_library_hash": LoraLibrary.open(lib).content_hash,
           "ilora_composition": "param", "ilora_exclude": None,
           "ilora_tasks": {t: {"learned": v} for t, v in learned.items()}}
    cfg.update(config)
    path = dir_ / "results_2026-01-01T00-00-00.000001.json"
    path.write_text(json.dumps({"results": {}, "config": cfg}))
    return path


def load_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("variant", ["mixed_alpha", "rslora"])
def test_exported_scaling_matches_the_composition_layer(llama, tmp_path, variant):
    """The library folds each adapter's alpha/r into B: mixed alphas export with lora_alpha=r
    (PEFT scaling 1), a shared rsLoRA scaling keeps use_rslora; both give the layer's logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ilora_eval.composition import Composition, CompositionState, inject
    from ilora_eval.library import LoraLibrary

    base, _ = llama
    lib = tmp_path / "lib"
    for i, alpha in enumerate((8, 16, 4)):
        tiny.make_adapter(base, lib / f"a{i}", "llama", seed=200 + i, alpha=alpha if variant == "mixed_alpha" else 8)
        if variant == "rslora":
            cfg_path = lib / f"a{i}" / "adapter_config.json"
            cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "use_rslora": True}))
    weights = [0.7, -1.2, 0.4]
    results = fake_run(tmp_path / "run", lib, "lorahub", {"t": {"adapters": ["a0", "a1", "a2"], "weights": weights}})
    routes = export(results, tmp_path / "export")
    folder = tmp_path / "export" / routes["tasks"]["t"]["adapter"]
    cfg = json.loads((folder / "adapter_config.json").read_text())
    if variant == "mixed_alpha":
        assert (cfg["lora_alpha"], cfg["use_rslora"]) == (cfg["r"], False)
    else:
        assert (cfg["lora_alpha"], cfg["use_rslora"]) == (8, True)

    ids = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    ours_model = AutoModelForCausalLM.from_pretrained(base).eval()
    state = CompositionState()
    library = LoraLibrary.open(lib)
    inject(ours_model, library, state)
    state.set_rows([state.register(Composition.of([0, 1, 2], weights))] * 2)
    ours = load_logits(ours_model, ids)
    ref = load_logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(folder)).eval(), ids)
    plain = load_logits(AutoModelForCausalLM.from_pretrained(base).eval(), ids)
    assert (ref - plain).abs().max() > 1e-2
    torch.testing.assert_close(ref, ours, atol=1e-5, rtol=1e-5)


def test_single_best_and_uniform_exports(llama, tmp_path):
    from safetensors.torch import load_file

    from ilora_eval.library import LoraLibrary

    base, lib = llama
    ids = LoraLibrary.open(lib).ids
    results = fake_run(tmp_path / "sb", lib, "single_best", {"t1": {"adapter": ids[2]}, "t2": {"adapter": ids[4]}})
    routes = export(results, tmp_path / "sb_out")
    for task, adapter in (("t1", ids[2]), ("t2", ids[4])):
        got = load_file(str(tmp_path / "sb_out" / routes["tasks"][task]["adapter"] / "adapter_model.safetensors"))
        want = load_file(str(lib / adapter / "adapter_model.safetensors"))
        assert set(got) == set(want)  # PEFT's key names
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=0, rtol=1e-6)

    results = fake_run(tmp_path / "uni", lib, "uniform", {"t1": {}, "t2": {}}, args={"top_k": 0})
    routes = export(results, tmp_path / "uni_out")
    assert routes["tasks"]["t1"] == routes["tasks"]["t2"] and len(routes["compositions"]) == 1
    (comp,) = routes["compositions"].values()
    assert comp["adapters"] == ids and comp["weights"] == [1 / len(ids)] * len(ids)


def test_export_refuses_in_one_line(llama, tmp_path):
    from ilora_eval.cli import main

    base, lib = llama
    learned = {"t": {"adapters": ["00_colors"], "weights": [1.0]}}
    cases = [
        (fake_run(tmp_path / "arrow", lib, "arrow", {"t": {}}), {}, "no single LoRA can express"),
        (fake_run(tmp_path / "base", lib, "base", {"t": {}}), {}, "strategy=base composes no adapter"),
        (fake_run(tmp_path / "out", lib, "lorahub", learned, ilora_composition="output"), {}, "re-run with composition=param"),
        (fake_run(tmp_path / "hash", lib, "lorahub", learned, ilora_library_hash="0" * 16), {}, "content hash .* but the run used"),
        (fake_run(tmp_path / "rf", lib, "retrieve_fuse", {"t": {}}, args={"top_k": 2}), {}, "pass --per-document"),
        (fake_run(tmp_path / "uk", lib, "uniform", {"t": {}}, args={"top_k": 2}), {}, "pass --per-document"),
        (fake_run(tmp_path / "il", lib, "ilora", {"t": {"examples": [learned["t"]]}}), {}, "no routing log .* pass --routing-log"),
        (fake_run(tmp_path / "miss", lib, "lorahub", {"t": {"adapters": ["nope"], "weights": [1.0]}}), {}, "missing from the library"),
        (fake_run(tmp_path / "gone", lib, "lorahub", learned, ilora_library=str(tmp_path / "moved")), {}, "pass --library"),
    ]
    for results, kw, message in cases:
        with pytest.raises(IloraError, match=message):
            export(results, tmp_path / "x" / results.parent.name, **kw)

    bad_log = tmp_path / "bad.jsonl"
    bad_log.write_text(json.dumps({"task": "t", "doc_id": 0, "example": 0, "adapters": ["01_numbers"], "weights": [1.0]}) + "\n")
    with pytest.raises(IloraError, match="does not match the run's learned compositions"):
        export(tmp_path / "il", tmp_path / "x" / "badlog", routing_log=str(bad_log))

    hf_run = tmp_path / "hf" / "results_2026-01-01T00-00-00.json"
    hf_run.parent.mkdir()
    hf_run.write_text(json.dumps({"results": {}, "config": {"model": "hf"}}))
    with pytest.raises(IloraError, match="not the results file of an --model ilora run"):
        export(hf_run, tmp_path / "x" / "hf")

    two = tmp_path / "two"
    for model in ("m1", "m2"):
        fake_run(two / model, lib, "lorahub", learned)
    with pytest.raises(IloraError, match="results of several models"):
        export(two, tmp_path / "x" / "two")

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(IloraError, match="is not empty"):
        export(tmp_path / "two" / "m1", full)

    # through the CLI: exit code 2 and one line naming the fix
    rc = main(["export", str(tmp_path / "arrow"), "--out", str(tmp_path / "x" / "cli")])
    assert rc == 2


def test_cli_export_prints_where_it_wrote(llama, tmp_path, capsys):
    from ilora_eval.cli import main

    base, lib = llama
    results = fake_run(tmp_path / "run", lib, "lorahub", {"t": {"adapters": ["00_colors", "03_logic"], "weights": [0.5, -0.25]}})
    newer = results.with_name("results_2026-02-01T00-00-00.000001.json")
    newer.write_text(results.read_text().replace('"t"', '"t_newer"'))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--dtype", "bfloat16"]) == 0
    assert "exported 1 adapter(s) for 1 task(s)" in capsys.readouterr().out
    routes = json.loads((tmp_path / "out" / "routes.json").read_text())
    assert list(routes["tasks"]) == ["t_newer"]  # the newest results file of the folder
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "out" / routes["tasks"]["t_newer"]["adapter"] / "adapter_model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty" in err
