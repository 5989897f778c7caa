"""Trains one LoRA per skill, all at once, in one batched model.

Every target linear layer of the base is wrapped by ``MultiLoraLinear``, which holds the
A/B matrices of every skill and applies to each batch row the adapter of that row's skill.
One step therefore trains the whole library. Initialisation follows PEFT (A uniform in
+-1/sqrt(d_in), i.e. ``kaiming_uniform_(a=sqrt(5))``; B zero). Weights come back in PEFT's
state-dict layout (``adapters.py`` writes them with ``PeftModel.save_pretrained``).
"""

from __future__ import annotations

import math
import random

import torch
from torch import nn

from ilora_eval.demo.skills import STOP, Skill, prompt, target
from ilora_eval.demo.specs import LoraSpec, TrainPlan
from ilora_eval.demo.train import collate, encode_many, noise_instruction, train_loop

FILLER_WORDING_FRAC = 0.5  # the adapter learns the skill, not one phrasing


class MultiLoraLinear(nn.Module):
    """``base(x) + scale * B[k] A[k] x`` with adapter ``k = route[row]`` per batch row."""

    def __init__(self, base: nn.Linear, n: int, rank: int, alpha: int, gen: torch.Generator):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        a = torch.empty(n, rank, base.in_features)
        bound = 1 / math.sqrt(base.in_features)
        a.uniform_(-bound, bound, generator=gen)
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(n, base.out_features, rank))
        self.route: torch.Tensor | None = None

    def forward(self, x):
        a = self.lora_A[self.route]  # (batch, r, in)
        b = self.lora_B[self.route]  # (batch, out, r)
        low = torch.einsum("bti,bri->btr", x, a)
        return self.base(x) + torch.einsum("btr,bor->bto", low, b) * self.scale


def _targets(model, spec: LoraSpec):
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if child_name in spec.target_modules and isinstance(child, nn.Linear):
                found.append((f"{name}.{child_name}" if name else child_name, module, child_name, child))
    return found


def train_loras(model, tokenizer, skills: list[Skill], spec: LoraSpec, plan: TrainPlan,
                seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """``{skill: PEFT-format LoRA state dict}``. The base model is frozen and left unchanged."""
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    wrapped = []
    for full_name, parent, child_name, child in _targets(model, spec):
        layer = MultiLoraLinear(child, len(skills), spec.rank, spec.alpha, gen)
        setattr(parent, child_name, layer)
        wrapped.append((full_name, parent, child_name, layer))

    rng = random.Random(f"{seed}:loras")
    pad = tokenizer.pad_token_id

    def batches():
        while True:
            prompts, targets, route = [], [], []
            for k, skill in enumerate(skills):
                for _ in range(plan.lora_batch_per_skill):
                    payload, answer = skill.sample(rng)
                    filler = rng.random() < FILLER_WORDING_FRAC
                    prompts.append(prompt(noise_instruction(rng) if filler else skill.instruction, payload))
                    targets.append(target(answer) + STOP)
                    route.append(k)
            ids = encode_many(tokenizer, prompts + targets)
            n = len(prompts)
            yield (*collate([(ids[i], ids[n + i]) for i in range(n)], pad), torch.tensor(route))

    def loss_fn(ids, attn, labels, route):
        for *_, layer in wrapped:
            layer.route = route
        return model(input_ids=ids, attention_mask=attn, labels=labels).loss

    params = [p for *_, layer in wrapped for p in (layer.lora_A, layer.lora_B)]
    try:
        train_loop(model, params, batches(), plan.lora_steps, plan.lora_lr, loss_fn)
    finally:
        for _, parent, child_name, layer in wrapped:
            setattr(parent, child_name, layer.base)
    return {
        skill.name: {
            f"base_model.model.{full_name}.lora_{which}.weight":
                getattr(layer, f"lora_{which}")[k].detach().clone().contiguous()
            for full_name, *_, layer in wrapped for which in ("A", "B")
        }
        for k, skill in enumerate(skills)
    }
