"""Tests of the demo asset builder (`ilora_eval.demo`): a tiny base model, a LoRA skill
library and the unseen demo tasks, built offline on CPU with `build_assets(quick=True)`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ilora_eval.demo.build import MANIFEST, build_assets, default_root, load_assets
from ilora_eval.demo.skills import COMPOSITES, SKILLS, get_skill
from ilora_eval.demo.tasks import N_ADAPT, read_jsonl


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(tmp_path_factory.mktemp("demo") / "assets", quick=True)


@pytest.fixture(scope="module")
def scores(assets):
    from ilora_eval.demo.evaluate import skill_scores

    return skill_scores(assets)


def _digests(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob(pattern))}


def test_layout_and_shared_adapter_spec(assets):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (assets.base_dir / name).is_file(), name
    assert sorted(p.name for p in assets.library_dir.iterdir()) == sorted(assets.skills)
    specs = set()
    for skill in assets.skills:
        adir = assets.adapter_dir(skill)
        assert (adir / "adapter_model.safetensors").is_file()
        cfg = json.loads((adir / "adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == "ilora-demo-base"
        specs.add((cfg["r"], cfg["lora_alpha"], tuple(sorted(cfg["target_modules"]))))
        texts = read_jsonl(adir / "texts.jsonl")
        assert len(texts) == 32 and all(isinstance(t["text"], str) and t["text"] for t in texts)
        assert all(t["text"].startswith(get_skill(skill).instruction + ": ") for t in texts)
    assert len(specs) == 1, specs
    assert len(assets.skills) >= 6
    assert len(SKILLS) >= 12  # the full library


def test_adapters_load_together_in_peft(assets):
    from peft import PeftModel

    from ilora_eval.demo.evaluate import load_base

    model, _ = load_base(assets.base_dir)
    peft_model = None
    for skill in assets.skills:  # adapter names = directory names (no clash with nn.Module attributes)
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(assets.adapter_dir(skill)), adapter_name=skill)
        else:
            peft_model.load_adapter(str(assets.adapter_dir(skill)), adapter_name=skill)
    assert set(peft_model.peft_config) == set(assets.skills)


def test_rebuild_is_a_no_op(assets):
    manifest = assets.root / MANIFEST
    before = manifest.stat().st_mtime_ns
    again = build_assets(assets.root, quick=True)
    assert manifest.stat().st_mtime_ns == before  # nothing was rewritten: the cached assets were reused
    assert again == assets
    assert load_assets(assets.root, quick=False) is None  # another flag would rebuild


def test_two_builds_are_bit_identical(assets, tmp_path):
    other = build_assets(tmp_path / "again", quick=True)
    first = _digests(assets.root, "*.safetensors")
    assert len(first) == 1 + len(assets.skills)
    assert _digests(other.root, "*.safetensors") == first
    for pattern in ("*.jsonl", "adapter_config.json", "tokenizer.json"):
        assert _digests(other.root, pattern) == _digests(assets.root, pattern), pattern


def test_each_lora_beats_the_base_on_its_skill(assets, scores):
    table = "\n".join(f"{s:12s} base={v['base']:.2f} lora={v['lora']:.2f}" for s, v in scores.items())
    print("\n" + table)
    good = [s for s, v in scores.items() if v["lora"] >= 0.6 and v["lora"] - v["base"] >= 0.4]
    assert len(good) >= len(scores) - 1, table


def test_demo_tasks_are_unseen_and_distinct(assets):
    from ilora_eval.demo.tasks import SPECS_BY_NAME, tasks_for

    assert assets.tasks == [t.name for t in tasks_for(assets.skills)]
    kinds = {SPECS_BY_NAME[t].kind for t in assets.tasks}
    assert kinds == {"composition", "paraphrase"}  # the quick library's; the shipped one has all three kinds
    names = {c.name: c for c in COMPOSITES}
    for task in assets.tasks:
        spec = SPECS_BY_NAME[task]
        pool = read_jsonl(assets.data_file(task))
        assert len(pool) > N_ADAPT + 10
        inputs = [d["input"] for d in pool]
        assert len(set(inputs)) == len(inputs)  # no adaptation document can repeat a scored one
        for doc in pool:
            assert doc["input"].endswith("\nAnswer:") and doc["target"].startswith(" ")
            assert "\n" not in doc["target"]
            payload = doc["input"].split(": ", 1)[1].removesuffix("\nAnswer:")
            if spec.kind == "composition":
                comp = names[doc["source_skill"]]
                assert doc["input"].startswith(comp.instruction + ": ")
                mid = get_skill(comp.first).answer(payload)
                assert doc["target"] == " " + get_skill(comp.second).answer(mid)
                assert comp.name not in assets.skills
            else:  # new wording, never the one the skill's LoRA was trained on
                skill = get_skill(doc["source_skill"])
                assert doc["input"].startswith(skill.new_instruction + ": ")
                assert not doc["input"].startswith(skill.instruction + ": ")
                assert doc["target"] == " " + skill.answer(payload)
        if spec.kind == "mixture":
            assert {d["source_skill"] for d in pool} == set(spec.parts)
            assert pool[0]["source_skill"] != pool[1]["source_skill"]  # interleaved


def test_task_yamls(assets, tmp_path):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))
    tasks_dir = assets.write_tasks(tmp_path / "tasks")
    for task in assets.tasks:
        cfg = yaml.load((tasks_dir / f"{task}.yaml").read_text(), Loader=Loader)
        assert cfg["task"] == task and cfg["output_type"] == "generate_until"
        assert cfg["custom_dataset"] == ("function", "ilora_eval.tasks.common.load_unseen")
        assert cfg["generation_kwargs"]["until"] == ["\n"] and cfg["generation_kwargs"]["do_sample"] is False
        assert cfg["test_split"] == "test" and cfg["fewshot_split"] == "adapt" and cfg["num_fewshot"] == 0
        assert cfg["target_delimiter"] == ""
        unseen = cfg["dataset_kwargs"]["unseen"]
        assert unseen["task"] == task and unseen["n_adapt"] == N_ADAPT
        assert Path(unseen["data_files"]).is_absolute() and Path(unseen["data_files"]).is_file()
    group = yaml.safe_load((tasks_dir / "demo.yaml").read_text())
    assert group["group"] == assets.group and group["task"] == assets.tasks


@pytest.mark.parametrize("adapt_seed", [None, 3])
def test_task_yamls_load_in_lm_eval(assets, tmp_path, adapt_seed):
    """The pack's split: a fixed held-out draw, or the per-seed protocol (`adapt_seed`: the pool
    shuffled with the seed, the first 5 adapt) -- checked against the pool and the reference shuffle."""
    import random

    from lm_eval.tasks import TaskManager, get_task_dict

    meta = {} if adapt_seed is None else {"adapt_seed": adapt_seed}
    manager = TaskManager(include_path=str(assets.write_tasks(tmp_path / "tasks")), include_defaults=False,
                          metadata=meta)
    tasks = get_task_dict(assets.tasks, manager)
    for name in assets.tasks:
        task = tasks[name]
        pool = read_jsonl(assets.data_file(name))
        docs, adapt = list(task.test_docs()), list(task.fewshot_docs())
        assert len(adapt) == N_ADAPT and len(docs) == len(pool) - N_ADAPT
        assert not {d["input"] for d in adapt} & {d["input"] for d in docs}
        assert task.doc_to_text(docs[0]) == docs[0]["input"]
        assert task.doc_to_target(docs[0]) == docs[0]["target"]
        if adapt_seed is not None:
            order = list(range(len(pool)))
            random.Random(adapt_seed).shuffle(order)
            assert [d["input"] for d in adapt + docs] == [pool[i]["input"] for i in order]


def test_manifest_hash_covers_every_file(assets, tmp_path):
    """The assets' hash is sha256 over `path<TAB>sha256` of every file (recomputed here from the
    bytes); a changed, missing or extra file makes the copy unusable instead of silently different."""
    import shutil

    manifest = json.loads((assets.root / MANIFEST).read_text())
    files = {p.relative_to(assets.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(assets.root.rglob("*")) if p.is_file() and p.name != MANIFEST}
    assert manifest["files"] == files
    expected = hashlib.sha256("".join(f"{k}\t{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
    assert assets.hash == manifest["assets_hash"] == expected
    for damage in ("change", "remove", "add"):
        copy = tmp_path / damage
        shutil.copytree(assets.root, copy)
        weights = copy / "library" / assets.skills[0] / "adapter_model.safetensors"
        if damage == "change":
            data = bytearray(weights.read_bytes())
            data[-1] ^= 1
            weights.write_bytes(bytes(data))
        elif damage == "remove":
            weights.unlink()
        else:
            (copy / "data" / "extra.jsonl").write_text("{}\n")
        assert load_assets(copy, quick=True) is None, damage
    shutil.copytree(assets.root, tmp_path / "intact")
    assert load_assets(tmp_path / "intact", quick=True).hash == assets.hash


def test_tokenizer_round_trips_task_text(assets):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(assets.base_dir))
    assert tok.pad_token is not None and tok.eos_token is not None
    for task in assets.tasks:
        for doc in read_jsonl(assets.data_file(task)):
            text = doc["input"] + doc["target"]
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == text


def test_default_root_and_foreign_directory(tmp_path, monkeypatch):
    from ilora_eval.errors import IloraError

    monkeypatch.setenv("ILORA_EVAL_CACHE", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / "demo"
    foreign = tmp_path / "not_demo"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(IloraError):
        build_assets(foreign, quick=True)
    assert (foreign / "keep.txt").read_text() == "mine"
