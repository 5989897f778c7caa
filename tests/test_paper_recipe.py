"""The paper-reproduction recipe on local stand-ins of the same layout (no Hub, no GPU)."""

import importlib.util
import json
from pathlib import Path

import pytest

import tiny
from ilora_eval.embeddings import HashingEmbedder
from ilora_eval.library import LoraLibrary
from ilora_eval.library_index import load_centroids

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper" / "reproduce.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_manifest_lists_lorahubs_196_adapters(recipe):
    ids = recipe.adapter_ids()
    assert len(ids) == len(set(ids)) == 196
    assert all(i.startswith("lorahub/flan_t5_large-") for i in ids)
    assert recipe.flan_key("anli/r1:0.1.0") == "anli_r1" and recipe.flan_key("glue/sst2:2.0.0") == "glue_sst2"


def test_texts_manifest_index_and_plan_on_stand_ins(recipe, t5, tmp_path):
    base, lib = t5
    names = sorted(p.name for p in lib.iterdir() if (p / "adapter_config.json").exists())[:3]
    ids = [f"lorahub/flan_t5_large-{n}" for n in names]
    flan = tmp_path / "flan.jsonl"
    with open(flan, "w") as fh:
        for n in names:
            for k in range(7):
                fh.write(json.dumps({"task_name": f"{n}:1.0.0", "template_type": "zs_noopt",
                                     "inputs": f"{tiny.TOPICS[n.split('_', 1)[1]][k % 3]} {k}", "targets": "yes"}) + "\n")
            fh.write(json.dumps({"task_name": n, "template_type": "fs_opt", "inputs": "few-shot", "targets": "x"}) + "\n")
    work = tmp_path / "work"
    manifest = recipe.build_texts(work, str(flan), per_adapter=5, ids=ids)
    data = json.loads(manifest.read_text())
    assert [e["id"] for e in data["adapters"]] == ids
    for e in data["adapters"]:
        lines = (work / e["texts"]).read_text().splitlines()
        assert len(lines) == 5 and all("few-shot" not in line for line in lines)  # zs_noopt only
    # stand-in adapters: the same manifest, with local paths in place of the Hub download
    for e, n in zip(data["adapters"], names):
        e["path"] = str(lib / n)
    manifest.write_text(json.dumps(data))
    library = LoraLibrary.open(manifest)
    assert library.ids == ids and library.index_dir == work / "library.json.index"
    assert load_centroids(library, HashingEmbedder()).shape == (3, 256)
    cmds = recipe.plan(work, str(base), [1, 2, 3, 4, 5], "cpu", "8", 2, "bbh_ilora", library=manifest)
    runs = [c for c in cmds if "lm_eval" in c]
    assert len(runs) == 1 + 3 * 5
    args = [c[c.index("--model_args") + 1] for c in runs]
    assert sum("strategy=ilora,order=asc" in a for a in args) == 5 and sum("strategy=lorahub" in a for a in args) == 5
    assert all(c[c.index("--limit") + 1] == "2" for c in runs)
    assert cmds[-1][3] == "compare"


def test_dry_run_prints_every_command(recipe, capsys):
    assert recipe.main(["run", "--dry-run", "--seeds", "1,2"]) == 0
    out = capsys.readouterr().out
    assert out.count("$ ") == 1 + 1 + 3 * 2 + 1
    assert "pretrained=google/flan-t5-large" in out and "--tasks bbh_ilora" in out
