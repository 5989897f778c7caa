"""LoRA library: discovery, validation with one-line errors, stacking, index and staleness."""

import json
import shutil

import numpy as np
import pytest
import torch

import tiny
from ilora_eval.embeddings import HashingEmbedder
from ilora_eval.errors import IloraError
from ilora_eval.library import LoraLibrary
from ilora_eval.library_index import build_index, load_centroids


@pytest.fixture
def lib_copy(llama, tmp_path):
    base, lib = llama
    dst = tmp_path / "lib"
    shutil.copytree(lib, dst, ignore=shutil.ignore_patterns("ilora_index"))
    return base, dst


def test_stacks_every_adapter_with_scaling_folded_into_B(llama):
    from safetensors.torch import load_file

    base, lib = llama
    library = LoraLibrary.open(lib)
    assert library.ids == sorted(p.name for p in lib.iterdir() if (p / "adapter_config.json").exists())
    assert library.spec.rank == 4 and library.spec.target_modules == ("q_proj", "v_proj")
    module = "model.layers.1.self_attn.v_proj"
    raw = load_file(str(lib / library.ids[2] / "adapter_model.safetensors"))
    key = f"base_model.model.{module}.lora_B.weight"
    torch.testing.assert_close(library.modules[module].B[2], raw[key] * (8 / 4))
    torch.testing.assert_close(library.modules[module].A[2], raw[key.replace("lora_B", "lora_A")])


def test_exclude_by_ids_or_regex(llama):
    _, lib = llama
    assert LoraLibrary.open(lib, exclude="00_colors|03_logic").ids == ["01_numbers", "02_animals", "04_sorting", "05_questions"]
    assert LoraLibrary.open(lib, exclude=r"0[0-3]_.*").ids == ["04_sorting", "05_questions"]
    with pytest.raises(IloraError, match="holds no adapters after exclude"):
        LoraLibrary.open(lib, exclude=".*")


def test_manifest_json_and_txt(llama, tmp_path):
    _, lib = llama
    (tmp_path / "m.json").write_text(json.dumps({"adapters": [{"id": "x", "path": str(lib / "01_numbers")},
                                                               {"path": str(lib / "02_animals")}]}))
    assert LoraLibrary.open(tmp_path / "m.json").ids == ["x", "02_animals"]
    (tmp_path / "m.txt").write_text(f"# comment\n{lib / '03_logic'}\n")
    lib_txt = LoraLibrary.open(tmp_path / "m.txt")
    assert lib_txt.ids == ["03_logic"] and lib_txt.index_dir == tmp_path / "m.txt.index"


def test_bad_libraries_give_one_line_errors(lib_copy, tmp_path):
    base, lib = lib_copy
    with pytest.raises(IloraError, match="does not exist"):
        LoraLibrary.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IloraError, match="holds no adapters"):
        LoraLibrary.open(tmp_path / "empty")
    with pytest.raises(IloraError, match="is a single adapter"):
        LoraLibrary.open(lib / "00_colors")
    with pytest.raises(IloraError, match="trained on 'llama_base' but pretrained="):
        LoraLibrary.open(lib, check_base="/models/other-model")
    LoraLibrary.open(lib, check_base=str(base))  # the matching base passes


@pytest.mark.parametrize("what,kw,match", [
    ("rank", {"rank": 2}, r"does not match the library \(rank"),
    ("targets", {"target_modules": ["q_proj", "k_proj"]}, r"does not match the library \(target_modules"),
    ("base", {"base_name": "another-base"}, r"does not match the library \(base_model"),
])
def test_mismatched_adapter_is_refused(lib_copy, what, kw, match):
    base, lib = lib_copy
    tiny.make_adapter(base, lib / "99_odd", "llama", seed=7, **kw)
    with pytest.raises(IloraError, match=match) as err:
        LoraLibrary.open(lib)
    assert "99_odd" in str(err.value) and "\n" not in str(err.value)


def test_corrupt_weights_are_refused(lib_copy):
    _, lib = lib_copy
    f = lib / "01_numbers" / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(IloraError, match="01_numbers: adapter_model.safetensors is corrupt or truncated"):
        LoraLibrary.open(lib)
    (f).unlink()
    with pytest.raises(IloraError, match="01_numbers .* has no weights"):
        LoraLibrary.open(lib)


def test_index_build_load_and_staleness(lib_copy):
    _, lib = lib_copy
    library = LoraLibrary.open(lib)
    emb = HashingEmbedder()
    out = build_index(library, emb, progress=False)
    meta = json.loads((out / "index.json").read_text())
    assert meta["library_hash"] == library.content_hash and meta["rank"] == 4 and meta["embedder"] == emb.name
    cents = load_centroids(library, emb)
    expected = emb.encode(library.texts["02_animals"]).mean(0)
    np.testing.assert_allclose(cents[2], expected / np.linalg.norm(expected), rtol=1e-5)
    with pytest.raises(IloraError, match="built with embedder 'hashing-256', not 'hashing-64'"):
        load_centroids(library, HashingEmbedder(64))
    (lib / "02_animals" / "texts.jsonl").write_text(json.dumps({"text": "something else"}) + "\n")
    changed = LoraLibrary.open(lib)
    assert changed.content_hash != library.content_hash
    with pytest.raises(IloraError, match=r"stale for adapters \['02_animals'\].*ilora-eval library build"):
        load_centroids(changed, emb)


def test_missing_texts_cannot_be_indexed(lib_copy):
    _, lib = lib_copy
    (lib / "03_logic" / "texts.jsonl").unlink()
    with pytest.raises(IloraError, match=r"\['03_logic'\] have no texts.jsonl"):
        build_index(LoraLibrary.open(lib), HashingEmbedder(), progress=False)


def test_library_build_command(lib_copy, capsys):
    from ilora_eval.cli import main

    _, lib = lib_copy
    assert main(["library", "build", str(lib), "--embedder", "hashing"]) == 0
    assert (lib / "ilora_index" / "centroids.safetensors").is_file()
    assert "indexed 6 adapters" in capsys.readouterr().out


def test_embedder_that_cannot_load_offline_says_how_to_fix(tmp_path):
    from ilora_eval.embeddings import load_embedder

    with pytest.raises(IloraError, match=r"embedder 'no-such-org/no-such-embedder' could not be loaded .*embedder=<local"):
        load_embedder("no-such-org/no-such-embedder")
    with pytest.raises(IloraError, match="could not be loaded"):
        load_embedder(str(tmp_path))  # an existing folder that is not a sentence-transformers model
