"""The demo assets: a tiny base model, a LoRA skill library and the unseen demo tasks.

The assets SHIP with the package (``ilora_eval/demo/assets/``, about 2 MB), so every machine
evaluates the identical model: ``shipped_assets()`` loads them and checks their hash.
``build_assets`` retrains them deterministically (``ilora-eval demo --rebuild``, or
``python -m ilora_eval.demo.build --ship`` to refresh the shipped copy)::

    assets = shipped_assets()                    # the committed files, hash-checked
    assets = build_assets(default_root())        # retrain (~1 min on one CPU core), then cached
    assets = build_assets(tmp, quick=True)       # a 6-skill library for tests (~15-20 s)

Layout under a root::

    manifest.json                  written last; lists every file with its sha256, and the
                                   assets' hash (``assets_hash``: a hash of that list)
    base/                          LlamaForCausalLM + tokenizer (save_pretrained)
    library/<skill>/               PEFT LoRA (adapter_config.json, adapter_model.safetensors)
                                   + texts.jsonl (a sample of its training texts)
    data/<task>.jsonl              unseen demo tasks: one pool of documents per task (tasks.py)
    skills_eval/<skill>.jsonl      held-out examples of each skill (training wording)

Nothing else is written into a root: the lm-eval YAMLs (absolute paths) and the library index
are written at run time elsewhere (``run.py``), so the shipped folder stays as committed.
Everything is seeded (``random.Random`` streams, ``torch.manual_seed``) and trained on one
thread, so two builds with the same seed and flags give byte-identical weight files on one
machine and software stack (another CPU or torch may round differently: hence shipping).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ilora_eval.demo import tasks as demo_tasks
from ilora_eval.demo.skills import KNOWN_WORDS, SKILLS, get_skill, prompt, target
from ilora_eval.demo.specs import LoraSpec, ModelSpec, TrainPlan

BUILDER_VERSION = "2"
MANIFEST = "manifest.json"
N_TEXTS = 32
N_SKILL_EVAL = 40
ASSET_DIRS = ("base", "library", "data", "skills_eval")  # everything the hash covers


@dataclass(frozen=True)
class BuildConfig:
    skills: tuple[str, ...]
    plan: TrainPlan
    model: ModelSpec = ModelSpec()
    lora: LoraSpec = LoraSpec()


FULL = BuildConfig(
    skills=tuple(s.name for s in SKILLS),
    plan=TrainPlan(pretrain_steps=600, pretrain_batch=48, pretrain_lr=7e-3,
                   lora_steps=100, lora_batch_per_skill=4, lora_lr=1e-2),
)

QUICK = BuildConfig(
    skills=("twice", "spell_digit", "max_digit", "min_digit", "count_items", "any_true"),
    plan=TrainPlan(pretrain_steps=250, pretrain_batch=48, pretrain_lr=7e-3,
                   lora_steps=100, lora_batch_per_skill=6, lora_lr=1e-2),
)


@dataclass
class DemoAssets:
    root: Path
    base_dir: Path  # base model + tokenizer (``from_pretrained``-able)
    library_dir: Path  # one PEFT adapter directory per skill
    data_dir: Path  # task JSONL pools
    skills_eval_dir: Path  # <skill>.jsonl held-out examples per skill
    skills: list[str]  # adapter names, in library order
    tasks: list[str]  # lm-eval task names
    group: str  # lm-eval group over ``tasks``
    quick: bool
    seed: int
    build_seconds: float
    hash: str  # assets_hash of the files (checked against the manifest when loaded)
    shipped: bool = False  # the package's committed assets (not a build of this machine)

    def adapter_dir(self, skill: str) -> Path:
        return self.library_dir / skill

    def data_file(self, task: str) -> Path:
        return demo_tasks.data_file(self.data_dir, task)

    def skill_eval_file(self, skill: str) -> Path:
        return self.skills_eval_dir / f"{skill}.jsonl"

    def write_tasks(self, tasks_dir: Path) -> Path:
        """lm-eval YAMLs of the demo tasks (absolute paths to ``data_dir``) into ``tasks_dir``:
        pass it to ``TaskManager(include_path=...)`` / ``--include_path``."""
        return demo_tasks.write_task_yamls(tasks_dir, self.data_dir, self.tasks)


def shipped_root() -> Path:
    """The assets committed with the package."""
    return Path(__file__).resolve().parent / "assets"


def default_root() -> Path:
    """Where ``--rebuild`` retrains: ``$ILORA_EVAL_CACHE/demo``, else ``~/.cache/ilora-eval/demo``."""
    cache = os.environ.get("ILORA_EVAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ilora-eval")
    return Path(cache) / "demo"


def _file_digest(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix != ".safetensors":
        data = data.replace(b"\r\n", b"\n")  # a checkout with CRLF line endings is the same asset
    return hashlib.sha256(data).hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every asset file under ``root`` (manifest.json excluded)."""
    root = Path(root)
    out = {}
    for sub in ASSET_DIRS:
        for p in sorted((root / sub).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                out[p.relative_to(root).as_posix()] = _file_digest(p)
    return dict(sorted(out.items()))


def assets_hash(digests: dict[str, str]) -> str:
    """The assets' hash: sha256 of the sorted ``path<TAB>sha256`` lines of every file."""
    text = "".join(f"{rel}\t{d}\n" for rel, d in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _assets(root: Path, manifest: dict, shipped: bool = False) -> DemoAssets:
    return DemoAssets(
        root=root,
        base_dir=root / "base",
        library_dir=root / "library",
        data_dir=root / "data",
        skills_eval_dir=root / "skills_eval",
        skills=list(manifest["skills"]),
        tasks=list(manifest["tasks"]),
        group=manifest["group"],
        quick=bool(manifest["quick"]),
        seed=int(manifest["seed"]),
        build_seconds=float(manifest["build_seconds"]),
        hash=manifest["assets_hash"],
        shipped=shipped,
    )


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _matches(manifest: dict | None, seed: int, quick: bool) -> bool:
    return bool(manifest) and manifest.get("builder_version") == BUILDER_VERSION \
        and manifest.get("seed") == seed and manifest.get("quick") == quick


def check_files(root: Path, manifest: dict) -> list[str]:
    """What differs between the files under ``root`` and its manifest (empty when they agree)."""
    have = file_digests(root)
    want = manifest.get("files", {})
    problems = [f"{rel} missing" for rel in want if rel not in have]
    problems += [f"{rel} changed" for rel in want if rel in have and have[rel] != want[rel]]
    problems += [f"{rel} not in the manifest" for rel in have if rel not in want]
    if not problems and assets_hash(have) != manifest.get("assets_hash"):
        problems.append("assets_hash does not match the listed files")
    return problems


def load_assets(root: Path | None = None, *, quick: bool = False, seed: int = 0) -> DemoAssets | None:
    """The assets under ``root`` if a matching, intact build is there, else None (nothing is built)."""
    root = Path(root) if root is not None else default_root()
    manifest = _read_manifest(root)
    if not _matches(manifest, seed, quick) or check_files(root, manifest):
        return None  # another build, or damaged: build again
    return _assets(root, manifest)


def shipped_assets() -> DemoAssets:
    """The package's committed assets, after checking every file against their manifest."""
    from ilora_eval.errors import IloraError

    root = shipped_root()
    manifest = _read_manifest(root)
    if manifest is None:
        raise IloraError(f"the demo assets are missing from the installed package ({root} has no {MANIFEST}); "
                         "reinstall ilora-eval, or run `ilora-eval demo --rebuild` to train them on this machine")
    problems = check_files(root, manifest)
    if problems:
        raise IloraError(f"the shipped demo assets in {root} differ from their manifest ({'; '.join(problems[:3])}"
                         f"{'; ...' if len(problems) > 3 else ''}); reinstall ilora-eval (or `git checkout` them), "
                         "or run `ilora-eval demo --rebuild` to train them on this machine")
    return _assets(root, manifest, shipped=True)


def build_assets(root: Path | None = None, *, quick: bool = False, seed: int = 0,
                 force: bool = False, log=None) -> DemoAssets:
    """Build (or reuse) the demo assets under ``root`` (default: ``default_root()``).

    Idempotent: returns at once when ``root/manifest.json`` records the same builder version,
    seed and ``quick`` flag and the files match it (unless ``force``). Otherwise builds into a
    sibling temporary directory and moves it into place, replacing an earlier demo build there.
    """
    from ilora_eval.errors import IloraError

    root = Path(root) if root is not None else default_root()
    if not force:
        assets = load_assets(root, quick=quick, seed=seed)
        if assets is not None:
            return assets
    if root.exists() and any(root.iterdir()) and _read_manifest(root) is None:
        raise IloraError(f"{root} exists and is not a demo asset directory (no {MANIFEST}); "
                         "choose an empty or new directory")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _build_into(tmp, quick=quick, seed=seed, log=log or (lambda msg: None))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    assets = load_assets(root, quick=quick, seed=seed)
    assert assets is not None
    return assets


def _build_into(out: Path, *, quick: bool, seed: int, log) -> None:
    import torch

    from ilora_eval.demo.adapters import save_library
    from ilora_eval.demo.lora_train import train_loras
    from ilora_eval.demo.pretrain import make_base_model, pretrain_base
    from ilora_eval.demo.tokenizer import build_tokenizer, latent_token
    import peft  # noqa: F401  (imports are not build time)
    import transformers.models.llama.modeling_llama  # noqa: F401

    cfg = QUICK if quick else FULL
    start, cpu_start = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fast for a model this small, and the same arithmetic on any core count
    try:
        skills = [get_skill(n) for n in cfg.skills]
        tokenizer = build_tokenizer(sorted(KNOWN_WORDS), n_latent=len(SKILLS))
        latent_ids = {s.name: tokenizer.convert_tokens_to_ids(latent_token(i)) for i, s in enumerate(SKILLS)}

        log(f"pretraining the base model ({cfg.plan.pretrain_steps} steps)")
        model = make_base_model(tokenizer, cfg.model, seed)
        losses = pretrain_base(model, tokenizer, skills, latent_ids, cfg.plan, seed)
        t_base = time.perf_counter() - start
        model.save_pretrained(out / "base")
        tokenizer.save_pretrained(out / "base")

        log(f"training {len(skills)} LoRA adapters ({cfg.plan.lora_steps} steps)")
        adapters = train_loras(model, tokenizer, skills, cfg.lora, cfg.plan, seed + 1)
        texts_rng = random.Random(f"{seed}:texts")
        texts = {s.name: [prompt(s.instruction, p) + target(a)
                          for p, a in (s.sample(texts_rng) for _ in range(N_TEXTS))]
                 for s in skills}
        save_library(model, adapters, cfg.lora, out / "library", texts)
        t_lora = time.perf_counter() - start - t_base
    finally:
        torch.set_num_threads(threads)

    eval_rng = random.Random(f"{seed}:skills-eval")
    for s in skills:
        demo_tasks.write_jsonl(out / "skills_eval" / f"{s.name}.jsonl",
                               demo_tasks.skill_eval_docs(s, N_SKILL_EVAL, eval_rng))
    specs = demo_tasks.tasks_for(cfg.skills)
    demo_tasks.write_data(out / "data", specs, seed)
    digests = file_digests(out)
    manifest = {
        "builder_version": BUILDER_VERSION,
        "seed": seed,
        "quick": quick,
        "skills": [s.name for s in skills],
        "tasks": [t.name for t in specs],
        "group": demo_tasks.GROUP,
        "config": asdict(cfg),
        "pretrain_final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "build_seconds": round(time.perf_counter() - start, 1),
        "build_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "seconds": {"base": round(t_base, 1), "loras": round(t_lora, 1)},
        "versions": _versions(),
        "assets_hash": assets_hash(digests),
        "files": digests,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    import peft
    import tokenizers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "tokenizers": tokenizers.__version__}


def main(argv=None) -> int:
    """``python -m ilora_eval.demo.build [--root DIR | --ship] [--quick] [--seed N] [--force] [--check]``"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ilora_eval.demo.build", description=main.__doc__)
    parser.add_argument("--root", type=Path, default=None, help=f"default: {default_root()}")
    parser.add_argument("--ship", action="store_true",
                        help=f"retrain into the package's shipped folder ({shipped_root()}); commit the result")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    parser.add_argument("--check", action="store_true", help="print base vs LoRA exact match per skill")
    args = parser.parse_args(argv)
    if args.ship and (args.root or args.quick or args.seed):
        parser.error("--ship builds the full assets with seed 0 into the package; drop --root/--quick/--seed")
    root = shipped_root() if args.ship else args.root
    assets = build_assets(root, quick=args.quick, seed=args.seed, force=args.force or args.ship, log=print)
    print(f"demo assets in {assets.root} (built in {assets.build_seconds:.1f} s), hash {assets.hash}")
    if args.check:
        from ilora_eval.demo.evaluate import skill_scores

        for skill, score in skill_scores(assets).items():
            print(f"  {skill:12s} base={score['base']:.2f} lora={score['lora']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
