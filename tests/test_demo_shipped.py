"""The demo's assets ship with the package: intact, big enough for a verdict (>= 8 unseen tasks of
three kinds), carried by a non-editable wheel byte for byte, and the same ones the committed
reference run evaluated."""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from ilora_eval.demo.build import MANIFEST, assets_hash, shipped_assets, shipped_root
from ilora_eval.demo.tasks import N_ADAPT, SPECS_BY_NAME, read_jsonl

REPO = Path(__file__).resolve().parents[1]


def test_shipped_assets_are_intact_and_big_enough():
    assets = shipped_assets()
    manifest = json.loads((shipped_root() / MANIFEST).read_text())
    on_disk = {p.relative_to(shipped_root()).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(shipped_root().rglob("*")) if p.is_file() and p.name != MANIFEST}
    assert on_disk == manifest["files"]  # nothing unlisted, nothing missing (no index or YAML written here)
    assert assets.hash == assets_hash(on_disk) == manifest["assets_hash"]
    assert assets.shipped and not assets.quick and len(assets.skills) == 13
    assert len(assets.tasks) >= 8
    kinds = [SPECS_BY_NAME[t].kind for t in assets.tasks]
    assert {k: kinds.count(k) for k in set(kinds)} == {"mixture": 4, "composition": 4, "paraphrase": 2}
    for task in assets.tasks:
        pool = read_jsonl(assets.data_file(task))
        assert len(pool) >= N_ADAPT + 20, task  # every seed scores 20+ documents per task
    weights = [p for p in on_disk if p.endswith(".safetensors")]
    assert len(weights) == 1 + 13


def test_a_modified_shipped_file_is_refused(monkeypatch, tmp_path):
    import shutil

    import ilora_eval.demo.build as build
    from ilora_eval.errors import IloraError

    copy = tmp_path / "assets"
    shutil.copytree(shipped_root(), copy)
    monkeypatch.setattr(build, "shipped_root", lambda: copy)
    assert build.shipped_assets().hash == shipped_assets().hash
    with open(copy / "data" / "demo_mix_six.jsonl", "a") as fh:
        fh.write('{"input": "x", "target": " y"}\n')
    with pytest.raises(IloraError, match="demo_mix_six.jsonl changed.*--rebuild"):
        build.shipped_assets()


def test_committed_reference_run_used_the_shipped_assets():
    record = json.loads((REPO / "results" / "demo" / "demo.json").read_text())
    assert record["assets"]["hash"] == shipped_assets().hash and record["assets"]["shipped"] is True
    assert record["seeds"] == [1, 2, 3, 4, 5] and len(record["assets"]["tasks"]) >= 8
    assert {(r["strategy"], r["seed"]) for r in record["runs"]} == {
        (s, seed) for s in record["strategies"] for seed in record["seeds"]}
    text = (REPO / "results" / "demo" / "report.md").read_text()
    assert record["assets"]["hash"] in text
    for path in (REPO / "results" / "demo").rglob("*"):  # no machine paths in the committed run
        if path.suffix in (".json", ".jsonl", ".md", ".csv"):
            content = path.read_text()
            assert str(Path.home()) not in content and "/tmp/" not in content, path


@pytest.mark.slow
def test_wheel_carries_the_shipped_assets(tmp_path):
    from test_packaging import _copy_checkout, _pip_wheel

    wheel = _pip_wheel(_copy_checkout(tmp_path / "src"), tmp_path / "wheel")
    manifest = json.loads((shipped_root() / MANIFEST).read_text())
    prefix = "ilora_eval/demo/assets/"
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n[len(prefix):]: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist()
                   if n.startswith(prefix) and not n.endswith("/")}
    assert shipped.pop(MANIFEST) == hashlib.sha256((shipped_root() / MANIFEST).read_bytes()).hexdigest()
    assert shipped == manifest["files"]
