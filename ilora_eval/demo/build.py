"""Deterministic builder of the demo assets: a tiny base model, a LoRA skill library, demo tasks.

    assets = build_assets(default_root())        # ~30-45 s on one CPU core, then cached
    assets = build_assets(tmp, quick=True)       # a 6-skill library for tests (~15-20 s)

Layout under the root::

    manifest.json                  written last; a matching one makes build_assets a no-op
    base/                          LlamaForCausalLM + tokenizer (save_pretrained)
    library/<skill>/               PEFT LoRA (adapter_config.json, adapter_model.safetensors)
                                   + texts.jsonl (a sample of its training texts)
    data/<task>.jsonl              unseen demo tasks: input, target, source_skill
    data/<task>_adapt.jsonl        5 adaptation documents, disjoint from the test documents
    skills_eval/<skill>.jsonl      held-out examples of each skill (training wording)
    tasks/<task>.yaml, demo.yaml   lm-eval tasks (absolute paths; pass tasks/ to --include_path)

Everything is seeded (``random.Random`` streams, ``torch.manual_seed``) and trained on one
thread, so two builds with the same seed and flags give byte-identical weight files on one
machine and software stack.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ilora_eval.demo import tasks as demo_tasks
from ilora_eval.demo.skills import KNOWN_WORDS, SKILLS, get_skill, prompt, target
from ilora_eval.demo.specs import LoraSpec, ModelSpec, TrainPlan

BUILDER_VERSION = "1"
MANIFEST = "manifest.json"
N_TEXTS = 32
N_SKILL_EVAL = 40


@dataclass(frozen=True)
class BuildConfig:
    skills: tuple[str, ...]
    mixed_skills: tuple[str, ...]  # skills of demo_mixed (a subset of ``skills``)
    plan: TrainPlan
    n_mixed_per_skill: int
    n_compose: int
    model: ModelSpec = ModelSpec()
    lora: LoraSpec = LoraSpec()


FULL = BuildConfig(
    skills=tuple(s.name for s in SKILLS),
    mixed_skills=("twice", "max_digit", "add", "next_day", "any_true", "word_length"),
    plan=TrainPlan(pretrain_steps=600, pretrain_batch=48, pretrain_lr=7e-3,
                   lora_steps=100, lora_batch_per_skill=4, lora_lr=1e-2),
    n_mixed_per_skill=10,
    n_compose=30,
)

QUICK = BuildConfig(
    skills=("twice", "spell_digit", "max_digit", "min_digit", "count_items", "any_true"),
    mixed_skills=("twice", "max_digit", "count_items", "any_true", "spell_digit"),
    plan=TrainPlan(pretrain_steps=250, pretrain_batch=48, pretrain_lr=7e-3,
                   lora_steps=100, lora_batch_per_skill=6, lora_lr=1e-2),
    n_mixed_per_skill=6,
    n_compose=16,
)


@dataclass
class DemoAssets:
    root: Path
    base_dir: Path  # base model + tokenizer (``from_pretrained``-able)
    library_dir: Path  # one PEFT adapter directory per skill
    tasks_dir: Path  # lm-eval YAMLs: pass to ``lm_eval --include_path``
    data_dir: Path  # task JSONL files
    skills_eval_dir: Path  # <skill>.jsonl held-out examples per skill
    skills: list[str]  # adapter names, in library order
    tasks: list[str]  # lm-eval task names (``demo_mixed``, ``demo_compose``)
    group: str  # lm-eval group over ``tasks``
    quick: bool
    seed: int
    build_seconds: float
    mixed_skills: list[str] = field(default_factory=list)

    def adapter_dir(self, skill: str) -> Path:
        return self.library_dir / skill

    def task_files(self, task: str) -> dict[str, Path]:
        """``{"test": ..., "adapt": ...}`` JSONL paths of one demo task."""
        return demo_tasks.data_files(self.data_dir, task)

    def skill_eval_file(self, skill: str) -> Path:
        return self.skills_eval_dir / f"{skill}.jsonl"


def default_root() -> Path:
    """``$ILORA_EVAL_CACHE/demo``, else ``~/.cache/ilora-eval/demo``."""
    cache = os.environ.get("ILORA_EVAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ilora-eval")
    return Path(cache) / "demo"


def _assets(root: Path, manifest: dict) -> DemoAssets:
    return DemoAssets(
        root=root,
        base_dir=root / "base",
        library_dir=root / "library",
        tasks_dir=root / "tasks",
        data_dir=root / "data",
        skills_eval_dir=root / "skills_eval",
        skills=list(manifest["skills"]),
        tasks=list(manifest["tasks"]),
        group=manifest["group"],
        quick=bool(manifest["quick"]),
        seed=int(manifest["seed"]),
        build_seconds=float(manifest["build_seconds"]),
        mixed_skills=list(manifest["mixed_skills"]),
    )


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _matches(manifest: dict | None, seed: int, quick: bool) -> bool:
    return bool(manifest) and manifest.get("builder_version") == BUILDER_VERSION \
        and manifest.get("seed") == seed and manifest.get("quick") == quick


def load_assets(root: Path | None = None, *, quick: bool = False, seed: int = 0) -> DemoAssets | None:
    """The assets under ``root`` if a matching build is there, else None (nothing is built)."""
    root = Path(root) if root is not None else default_root()
    manifest = _read_manifest(root)
    if not _matches(manifest, seed, quick):
        return None
    assets = _assets(root, manifest)
    needed = [assets.base_dir / "model.safetensors"] + [
        assets.adapter_dir(n) / "adapter_model.safetensors" for n in assets.skills
    ] + [f for t in assets.tasks for f in assets.task_files(t).values()]
    if not all(p.is_file() for p in needed):
        return None  # damaged: build again
    # The YAMLs hold absolute paths: rewrite them if the root was moved or copied.
    files = assets.task_files(assets.tasks[0])
    try:
        yaml_text = (assets.tasks_dir / f"{assets.tasks[0]}.yaml").read_text(encoding="utf-8")
    except OSError:
        yaml_text = ""
    if json.dumps(str(files["test"].resolve())) not in yaml_text:
        demo_tasks.write_task_yamls(assets.tasks_dir, assets.data_dir)
    return assets


def build_assets(root: Path | None = None, *, quick: bool = False, seed: int = 0,
                 force: bool = False, log=None) -> DemoAssets:
    """Build (or reuse) the demo assets under ``root`` (default: ``default_root()``).

    Idempotent: returns at once when ``root/manifest.json`` records the same builder version,
    seed and ``quick`` flag (unless ``force``). Otherwise builds into a sibling temporary
    directory and moves it into place, replacing an earlier demo build there.
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
        _build_into(tmp, root, quick=quick, seed=seed, log=log or (lambda msg: None))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    assets = load_assets(root, quick=quick, seed=seed)
    assert assets is not None
    return assets


def _build_into(out: Path, final_root: Path, *, quick: bool, seed: int, log) -> None:
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
    torch.set_num_threads(1)  # fast for a model this small, and the same arithmetic everywhere
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
    demo_tasks.write_data(out / "data", list(cfg.mixed_skills), cfg.n_mixed_per_skill, cfg.n_compose, seed)
    demo_tasks.write_task_yamls(out / "tasks", final_root / "data")  # paths valid once moved
    manifest = {
        "builder_version": BUILDER_VERSION,
        "seed": seed,
        "quick": quick,
        "skills": [s.name for s in skills],
        "mixed_skills": list(cfg.mixed_skills),
        "tasks": list(demo_tasks.TASKS),
        "group": demo_tasks.GROUP,
        "config": asdict(cfg),
        "pretrain_final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "build_seconds": round(time.perf_counter() - start, 1),
        "build_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "seconds": {"base": round(t_base, 1), "loras": round(t_lora, 1)},
        "versions": _versions(),
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
    """``python -m ilora_eval.demo.build [--root DIR] [--quick] [--seed N] [--force] [--check]``"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ilora_eval.demo.build", description=main.__doc__)
    parser.add_argument("--root", type=Path, default=None, help=f"default: {default_root()}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    parser.add_argument("--check", action="store_true", help="print base vs LoRA exact match per skill")
    args = parser.parse_args(argv)
    assets = build_assets(args.root, quick=args.quick, seed=args.seed, force=args.force, log=print)
    print(f"demo assets in {assets.root} (built in {assets.build_seconds:.1f} s)")
    if args.check:
        from ilora_eval.demo.evaluate import skill_scores

        for skill, score in skill_scores(assets).items():
            print(f"  {skill:12s} base={score['base']:.2f} lora={score['lora']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
