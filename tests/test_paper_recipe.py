"""The paper-reproduction recipe on local stand-ins of the same layout (no Hub, no GPU)."""

import json
import os

import pytest

import tiny
from ilora_eval.embeddings import HashingEmbedder
from ilora_eval.library import LoraLibrary
from ilora_eval.library_index import load_centroids


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
    cmds = recipe.plan(work, str(base), [1, 2, 3, 4, 5], "cpu", "8", 2, library=manifest)
    runs = [c for c in cmds if "lm_eval" in c]
    assert len(runs) == 5 + 3 * 5  # base per seed: each seed scores its own draw of documents
    args = [c[c.index("--model_args") + 1] for c in runs]
    assert sum("strategy=ilora,order=asc" in a for a in args) == 5 and sum("strategy=lorahub" in a for a in args) == 5
    assert all(c[c.index("--limit") + 1] == "2" for c in runs)
    assert all(c[c.index("--tasks") + 1] == "bbh_ilora_raw" for c in runs)  # the reference's raw inputs
    assert all(f"embedder={recipe.REFERENCE_EMBEDDER}" in a and "max_length=2048" in a for a in args)
    for c, a in zip(runs, args):
        seed = int(a.split("seed=")[1].split(",")[0])
        assert json.loads(c[c.index("--metadata") + 1]) == {"adapt_seed": seed}
    assert cmds[0][-2:] == ["--embedder", recipe.REFERENCE_EMBEDDER]
    assert cmds[-1][3] == "compare" and cmds[-1][cmds[-1].index("--baseline") + 1] == "lorahub"
    fixed = [c for c in recipe.plan(work, str(base), [1, 2], "cpu", "8", None, protocol="fixed") if "lm_eval" in c]
    assert len(fixed) == 1 + 3 * 2 and not any("--metadata" in c for c in fixed)


def test_reference_manifest_resolves_onto_lorahubs_ids(recipe):
    ref = recipe.adapter_ids(recipe.MANIFESTS["reference97"])
    assert len(ref) == len(set(ref)) == 91
    assert set(ref) <= set(recipe.adapter_ids())


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(os.environ.get("ILORA_BBH_DIR", "")),
                    reason="needs BIG-Bench-Hard: ILORA_BBH_DIR naming a folder of its <task>.json files")
def test_recipe_runs_end_to_end_on_stand_ins(recipe, t5, tmp_path, monkeypatch):
    """Every planned command, run in-process on a tiny T5 and stand-in adapters, down to the
    comparison report: seeds grouped, LoraHub's seed mean as the baseline."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    from ilora_eval.cli import main as ilora_eval_main

    base, lib = t5
    names = sorted(p.name for p in lib.iterdir() if (p / "adapter_config.json").exists())
    manifest = tmp_path / "library.json"
    manifest.write_text(json.dumps({"adapters": [{"id": f"lorahub/flan_t5_large-{n}", "path": str(lib / n),
                                                   "texts": str(lib / n / "texts.jsonl")} for n in names]}))
    work = tmp_path / "work"
    cmds = recipe.plan(work, str(base), [1, 2], "cpu", "4", 3, "bbh_ilora_navigate_raw", library=manifest,
                       embedder="hashing", max_length=128, extra=["--gen_kwargs", "max_gen_toks=3"])
    small = {"strategy=lorahub": "strategy=lorahub,n_modules=3,budget=3", "strategy=ilora": "strategy=ilora,top_k=3,budget=3"}
    for cmd in cmds:
        if cmd[2] == "lm_eval":
            i = cmd.index("--model_args") + 1
            for old, new in small.items():
                cmd[i] = cmd[i].replace(old, new)
            cmd[i] += ",check_base=false,fit_cache=false"
            monkeypatch.setattr(sys, "argv", ["lm_eval", *cmd[3:]])
            cli_evaluate()
        else:
            assert ilora_eval_main(cmd[3:]) == 0
    folders = sorted(p.name for p in (work / "results").iterdir())
    assert len(folders) == 2 * 4  # one folder per configuration: base, lorahub, ilora desc/asc x 2 seeds
    report = (work / "compare" / "report.md").read_text()
    assert "lorahub" in report and "1,2" in report


def test_dry_run_prints_every_command(recipe, capsys):
    assert recipe.main(["run", "--dry-run", "--seeds", "1,2"]) == 0
    out = capsys.readouterr().out
    assert out.count("$ ") == 1 + 2 + 3 * 2 + 1  # index, base per seed, lorahub + ilora desc/asc per seed, compare
    assert "pretrained=google/flan-t5-large" in out and "--tasks bbh_ilora_raw" in out
