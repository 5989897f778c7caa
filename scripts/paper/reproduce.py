"""Reproduce the paper's setting: FLAN-T5-large, LoraHub's 196 adapters, BBH (27 tasks), seeds 1-5.

Needs Hub access and a GPU. Steps (each can be run alone; --dry-run prints what would run):

  1. texts    sample each adapter's FLAN 2022 training texts (conceptofmind/FLAN_2022, zs_noopt)
              into <work>/texts/<adapter>.jsonl and write <work>/library.json, a manifest pairing
              every Hub id with its texts
  2. index    `ilora-eval library build <work>/library.json` (centroids, all-MiniLM-L6-v2)
  3. run      `lm_eval --model ilora` on bbh_ilora for base, lorahub and ilora (order desc and asc)
              with seeds 1-5, results under <work>/results/<run>/
  4. compare  `ilora-eval compare` of all runs against LoraHub -> <work>/compare/

    python scripts/paper/reproduce.py all --work runs/paper --device cuda:0 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "lorahub_flan_t5_large.txt"
PREFIX = "lorahub/flan_t5_large-"
FLAN = "conceptofmind/FLAN_2022"


def adapter_ids(manifest: Path = MANIFEST) -> list[str]:
    return [line.strip() for line in manifest.read_text().splitlines() if line.strip() and not line.startswith("#")]


def flan_key(task_name: str) -> str:
    """FLAN 2022 task names ("anli/r1:0.1.0", "glue/sst2:2.0.0", "super_glue_wsc.fixed") -> adapter suffix."""
    return task_name.split(":")[0].replace("/", "_")


def build_texts(work: Path, flan: str = FLAN, per_adapter: int = 200, seed: int = 0, ids=None,
                template_type: str = "zs_noopt") -> Path:
    from datasets import load_dataset

    ids = ids or adapter_ids()
    wanted = {i[len(PREFIX):] if i.startswith(PREFIX) else i.rsplit("/", 1)[-1]: i for i in ids}
    if Path(flan).exists():
        data = load_dataset("json", data_files=str(flan), split="train")
    else:
        data = load_dataset(flan, split="train")
    pools: dict[str, list[str]] = {k: [] for k in wanted}
    for row in data:
        if template_type and row.get("template_type") not in (None, template_type):
            continue
        key = flan_key(str(row["task_name"]))
        if key in pools:
            pools[key].append(f"{row['inputs']} {row['targets']}")
    missing = [wanted[k] for k, texts in pools.items() if not texts]
    if missing:
        raise SystemExit(f"no FLAN texts for {len(missing)} adapters, e.g. {missing[:3]}; check the FLAN source")
    texts_dir = work / "texts"
    texts_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for key, hub_id in wanted.items():
        sample = random.Random(f"{seed}:{key}").sample(pools[key], min(per_adapter, len(pools[key])))
        path = texts_dir / f"{key}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in sample))
        entries.append({"id": hub_id, "texts": f"texts/{key}.jsonl"})
    out = work / "library.json"
    out.write_text(json.dumps({"adapters": entries}, indent=1))
    return out


def plan(work: Path, model: str, seeds, device: str, batch_size: str, limit: int | None, tasks: str,
         library: Path | None = None) -> list[list[str]]:
    library = library or work / "library.json"
    cmds = [[sys.executable, "-m", "ilora_eval.cli", "library", "build", str(library)]]
    runs = [("base", "strategy=base", [1])]
    for seed in seeds:
        runs.append((f"lorahub_seed{seed}", f"strategy=lorahub,seed={seed}", [seed]))
        runs.append((f"ilora_desc_seed{seed}", f"strategy=ilora,order=desc,seed={seed}", [seed]))
        runs.append((f"ilora_asc_seed{seed}", f"strategy=ilora,order=asc,seed={seed}", [seed]))
    for name, args, (seed,) in runs:
        cmd = [sys.executable, "-m", "lm_eval", "--model", "ilora",
               "--model_args", f"pretrained={model},library={library},{args}",
               "--include_path", str(task_pack()), "--tasks", tasks, "--device", device,
               "--batch_size", str(batch_size), "--seed", str(seed), "--log_samples",
               "--output_path", str(work / "results" / name)]
        if limit:
            cmd += ["--limit", str(limit)]
        cmds.append(cmd)
    cmds.append([sys.executable, "-m", "ilora_eval.cli", "compare", str(work / "results"),
                 "--baseline", "lorahub(seed=1)", "--out", str(work / "compare")])
    return cmds


def task_pack() -> Path:
    from ilora_eval.task_paths import task_pack_dir

    return task_pack_dir()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["texts", "run", "all"])
    p.add_argument("--work", type=Path, default=Path("runs/paper"))
    p.add_argument("--model", default="google/flan-t5-large")
    p.add_argument("--flan", default=FLAN, help="FLAN 2022 Hub id or a local JSON/JSONL file of the same layout")
    p.add_argument("--manifest", type=Path, default=MANIFEST, help="adapter ids, one per line")
    p.add_argument("--texts-per-adapter", type=int, default=200)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--tasks", default="bbh_ilora")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--batch-size", default="16")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    args = p.parse_args(argv)
    if args.step in ("texts", "all") and not args.dry_run:
        print(f"wrote {build_texts(args.work, args.flan, args.texts_per_adapter, ids=adapter_ids(args.manifest))}")
    if args.step in ("run", "all"):
        seeds = [int(s) for s in args.seeds.split(",")]
        for cmd in plan(args.work, args.model, seeds, args.device, args.batch_size, args.limit, args.tasks):
            print("$ " + shlex.join(cmd), flush=True)
            if not args.dry_run:
                subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
