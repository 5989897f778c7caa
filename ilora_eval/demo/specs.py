"""Sizes and schedules of the demo model, its pretraining and its LoRA library (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

BASE_MODEL_NAME = "ilora-demo-base"  # stable id in the saved configs (not a machine path)


@dataclass(frozen=True)
class ModelSpec:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 192
    max_positions: int = 128


@dataclass(frozen=True)
class TrainPlan:
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    lora_steps: int
    lora_batch_per_skill: int
    lora_lr: float
    copy_frac: float = 0.3  # pretraining examples without a latent token (echo the payload)
    compose_frac: float = 0.15  # pretraining examples with two latent tokens (a chain)


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    )
