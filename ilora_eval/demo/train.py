"""Shared training pieces of the demo: filler wording, batches, one optimisation loop.

How a tiny model can be bad at every skill while a rank-8 LoRA masters one in a few dozen
steps (``pretrain.py``, ``lora_train.py``): the base is pretrained on a mixture in which each
skill is only reachable through a reserved ``<latent_k>`` token in front of the prompt;
without such a token it is trained to echo the payload (right format, wrong answer),
whatever the instruction says. A skill's LoRA, trained on plain prompts of that skill,
learns to unlock it.
"""

from __future__ import annotations

import math
import random

import torch

from ilora_eval.demo.skills import KNOWN_WORDS

NOISE_WORDS = sorted(KNOWN_WORDS)


def noise_instruction(rng: random.Random) -> str:
    """Filler wording: 1-4 random known words (the instruction alone never selects a skill)."""
    return " ".join(rng.choice(NOISE_WORDS) for _ in range(rng.randint(1, 4)))


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded ``(input_ids, attention_mask, labels)``; the loss covers targets only."""
    width = max(len(x) + len(y) for x, y in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        seq = x + y
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        labels[i, len(x): len(seq)] = torch.tensor(y)
    return ids, attn, labels


def train_loop(model, params, batches, steps: int, lr: float, loss_fn) -> list[float]:
    """AdamW, 10% linear warm-up then cosine decay, gradient clipping at 1."""
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(*next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses
