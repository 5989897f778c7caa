"""Reproduce the paper's setting: FLAN-T5-large, LoraHub's adapters, BBH (27 tasks), seeds 1-5.

Needs Hub access and a GPU. Steps (each can be run alone; --dry-run prints what would run):

  1. texts    sample each adapter's FLAN 2022 training texts (conceptofmind/FLAN_2022, zs_noopt)
              into <work>/texts/<adapter>.jsonl and write <work>/library.json, a manifest pairing
              every Hub id with its texts (--adapters lorahub196: LoraHub's 196; reference97: the
              iLoraComp reference code's list, 91 of its 97 names resolved onto LoraHub's ids)
  2. index    `ilora-eval library build` with the reference's embedder
              (flax-sentence-embeddings/all_datasets_v4_MiniLM-L6)
  3. run      `lm_eval --model ilora` on bbh_ilora_raw (the reference's raw BBH inputs) for base,
              lorahub and ilora (order=desc: the paper's text; order=asc: the reference code), seeds
              1-5, LoraHub's objective (the default), T5 inputs up to 2048 tokens as LoraHub keeps
              them; --protocol per-seed (default, the iLoraComp code): each seed redraws the 5
              adaptation examples and the scored documents (`--metadata '{"adapt_seed": S}'`), the
              same draw for every strategy; --protocol fixed: LoraHub's, one held-out draw, the
              seed only draws LoraHub's modules. All runs under <work>/results/ (the model names a
              folder per configuration).
  4. compare  `ilora-eval compare` of all runs against LoraHub's seed group -> <work>/compare/:
              per task and average, mean ± sd over seeds per strategy, and on how many of the 27
              tasks each strategy beats LoraHub's seed mean (the paper's "16 of 27")

    python scripts/paper/reproduce.py all --work runs/paper --device cuda:0 --batch-size 16

--reference removes the differences from the reference code that are choices (today: generation
stops at the model's EOS only, as the reference's `model.generate(max_new_tokens=256)`, instead of
the pack's `</s>`/`Q:` stop strings); docs/paper-recipe.md lists every remaining difference and its
expected effect.
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
MANIFESTS = {"lorahub196": MANIFEST, "reference97": HERE / "ilora_reference_97.txt"}
REFERENCE_EMBEDDER = "flax-sentence-embeddings/all_datasets_v4_MiniLM-L6"
PROTOCOLS = ("per-seed", "fixed")
PREFIX = "lorahub/flan_t5_large-"
FLAN = "conceptofmind/FLAN_2022"
# the reference decodes `max_new_tokens=256` with no stop strings (HF generate stops at EOS); the
# pack stops at </s> and Q: as well. lm-eval always adds the EOS; max_gen_toks is the pack's 256.
REFERENCE_GEN_KWARGS = {"until": ["</s>"], "max_gen_toks": 256}


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


def plan(work: Path, model: str, seeds, device: str, batch_size: str, limit: int | None, tasks: str = "bbh_ilora_raw",
         library: Path | None = None, embedder: str = REFERENCE_EMBEDDER, protocol: str = "per-seed",
         max_length: int = 2048, extra: list[str] | None = None, reference: bool = False) -> list[list[str]]:
    """The commands of steps 2-4, in order. `reference`: the reference code's generation settings."""
    if protocol not in PROTOCOLS:
        raise SystemExit(f"--protocol {protocol!r} is unknown; choose one of {', '.join(PROTOCOLS)}")
    library = library or work / "library.json"
    cli = [sys.executable, "-m", "ilora_eval.cli"]
    cmds = [[*cli, "library", "build", str(library), "--embedder", embedder]]
    runs = [("strategy=base", seed) for seed in (seeds if protocol == "per-seed" else seeds[:1])]
    for seed in seeds:
        runs += [("strategy=lorahub", seed), ("strategy=ilora,order=desc", seed), ("strategy=ilora,order=asc", seed)]
    for args, seed in runs:
        model_args = f"pretrained={model},library={library},{args},seed={seed},embedder={embedder},max_length={max_length}"
        cmd = [sys.executable, "-m", "lm_eval", "--model", "ilora", "--model_args", model_args,
               "--include_path", str(task_pack()), "--tasks", tasks, "--device", device,
               "--batch_size", str(batch_size), "--log_samples", "--output_path", str(work / "results")]
        if protocol == "per-seed":
            cmd += ["--metadata", json.dumps({"adapt_seed": seed})]
        if reference:
            cmd += ["--gen_kwargs", json.dumps(REFERENCE_GEN_KWARGS)]
        if limit:
            cmd += ["--limit", str(limit)]
        cmds.append(cmd + list(extra or []))
    cmds.append([*cli, "compare", str(work / "results"), "--baseline", "lorahub", "--out", str(work / "compare"), "--overwrite"])
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
    p.add_argument("--adapters", default="lorahub196",
                   help="lorahub196 (LoraHub's list), reference97 (the iLoraComp code's list) or a manifest file")
    p.add_argument("--embedder", default=REFERENCE_EMBEDDER, help=f"sentence embedder (default: the reference's, "
                   f"{REFERENCE_EMBEDDER})")
    p.add_argument("--protocol", choices=PROTOCOLS, default="per-seed",
                   help="per-seed: each seed redraws examples and scored documents (the iLoraComp code); "
                        "fixed: one held-out draw, seeds draw LoraHub's modules only (LoraHub's code)")
    p.add_argument("--texts-per-adapter", type=int, default=200)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--tasks", default="bbh_ilora_raw")
    p.add_argument("--max-length", type=int, default=2048, help="T5 input tokens kept (LoraHub: 2048; HFLM: 512)")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--batch-size", default="16")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--reference", action="store_true",
                   help="the reference code's choices where they differ from the pack's (generation: no stop "
                        "strings but EOS); see docs/paper-recipe.md")
    p.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    args = p.parse_args(argv)
    manifest = MANIFESTS.get(args.adapters, Path(args.adapters))
    if args.step in ("texts", "all") and not args.dry_run:
        print(f"wrote {build_texts(args.work, args.flan, args.texts_per_adapter, ids=adapter_ids(manifest))}")
    if args.step in ("run", "all"):
        seeds = [int(s) for s in args.seeds.split(",")]
        for cmd in plan(args.work, args.model, seeds, args.device, args.batch_size, args.limit, args.tasks,
                        embedder=args.embedder, protocol=args.protocol, max_length=args.max_length,
                        reference=args.reference):
            print("$ " + shlex.join(cmd), flush=True)
            if not args.dry_run:
                subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
