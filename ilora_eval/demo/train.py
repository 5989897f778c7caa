"""Training of the demo's base model and of its LoRA skill library (CPU, seconds).

How a tiny model can be bad at every skill while a rank-8 LoRA masters one in a few dozen
steps: the base is pretrained on a mixture in which each skill is only reachable through a
reserved ``<latent_k>`` token in front of the prompt; without such a token it is trained to
echo the payload (right format, wrong answer), whatever the instruction says. A skill's
LoRA, trained on plain prompts of that skill, learns to unlock the latent skill. Pairs of
latent tokens are pretrained to chain two word skills, so that a combination of two LoRAs
can solve a composed task that no single LoRA covers.

All LoRAs train at once in one batched model (each example routed to its own adapter);
the result is then written with PEFT so that every adapter is an ordinary PEFT directory.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import nn

from ilora_eval.demo.skills import (COMPOSITES, DIGIT_CONSUMERS, DIGIT_PRODUCERS, KNOWN_WORDS, Skill,
                                    chain_sample, prompt, target)

STOP = "\n"  # every training target ends with it; generation stops there


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
    copy_frac: float = 0.3
    compose_frac: float = 0.15


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    )


# --- data ------------------------------------------------------------------------------------


NOISE_WORDS = sorted(KNOWN_WORDS)


def _noise_instruction(rng: random.Random) -> str:
    """Filler wording: 1-4 random known words. Pretraining on it teaches the base model that
    the instruction text alone does not select a skill."""
    return " ".join(rng.choice(NOISE_WORDS) for _ in range(rng.randint(1, 4)))


class PretrainMixture:
    """Examples ``(prompt ids, target ids)`` for the base model; see the module docstring."""

    def __init__(self, tokenizer, skills: list[Skill], latent_ids: dict[str, int], seed: int,
                 copy_frac: float, compose_frac: float):
        self.tok = tokenizer
        self.skills = skills
        self.latent_ids = latent_ids
        self.rng = random.Random(seed)
        self.copy_frac = copy_frac
        self.compose_frac = compose_frac
        self.real_wording_frac = 0.3
        names = [s.name for s in skills]
        held_out = {(c.first, c.second) for c in COMPOSITES}
        self.pairs = [(a, b) for a in DIGIT_PRODUCERS if a in names
                      for b in DIGIT_CONSUMERS if b in names and (a, b) not in held_out]
        self.instructions = [s.instruction for s in skills]

    def _instruction(self) -> str:
        rng = self.rng
        return rng.choice(self.instructions) if rng.random() < self.real_wording_frac else _noise_instruction(rng)

    def example(self) -> tuple[list[int], str, str]:
        """(latent token ids, prompt text, target text)."""
        rng = self.rng
        r = rng.random()
        if r < self.copy_frac:
            payload, _ = rng.choice(self.skills).sample(rng)
            latents, answer = [], payload
        elif r < self.copy_frac + self.compose_frac and self.pairs:
            a, b = rng.choice(self.pairs)
            payload, answer = chain_sample(a, b, rng)
            latents = [self.latent_ids[a], self.latent_ids[b]]
        else:
            skill = rng.choice(self.skills)
            payload, answer = skill.sample(rng)
            latents = [self.latent_ids[skill.name]]
        return latents, prompt(self._instruction(), payload), target(answer) + STOP

    def batch(self, n: int) -> list[tuple[list[int], list[int]]]:
        examples = [self.example() for _ in range(n)]
        ids = encode_many(self.tok, [e[1] for e in examples] + [e[2] for e in examples])
        return [(latents + ids[i], ids[n + i]) for i, (latents, _, _) in enumerate(examples)]


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded batch; the loss covers target tokens only."""
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


# --- base model ------------------------------------------------------------------------------


def make_base_model(tokenizer, spec: ModelSpec, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _train_loop(model, params, batches, steps: int, lr: float, forward) -> list[float]:
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    losses = []
    for _ in range(steps):
        loss = forward(*next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def pretrain_base(model, tokenizer, skills: list[Skill], latent_ids: dict[str, int],
                  plan: TrainPlan, seed: int) -> list[float]:
    mix = PretrainMixture(tokenizer, skills, latent_ids, seed, plan.copy_frac, plan.compose_frac)
    pad = tokenizer.pad_token_id

    def batches():
        while True:
            yield collate(mix.batch(plan.pretrain_batch), pad)

    def forward(ids, attn, labels):
        return model(input_ids=ids, attention_mask=attn, labels=labels).loss

    params = [p for p in model.parameters() if p.requires_grad]
    return _train_loop(model, params, batches(), plan.pretrain_steps, plan.pretrain_lr, forward)


# --- LoRA library ----------------------------------------------------------------------------


class MultiLoraLinear(nn.Module):
    """``base(x) + scale * B[k] A[k] x`` with adapter ``k`` chosen per batch row (``route``)."""

    def __init__(self, base: nn.Linear, n: int, rank: int, alpha: int, gen: torch.Generator):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        a = torch.empty(n, rank, base.in_features)
        bound = 1 / math.sqrt(base.in_features)  # PEFT's default: kaiming_uniform_(a=sqrt(5))
        a.uniform_(-bound, bound, generator=gen)
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(n, base.out_features, rank))
        self.route: torch.Tensor | None = None

    def forward(self, x):
        a = self.lora_A[self.route]  # (batch, r, in)
        b = self.lora_B[self.route]  # (batch, out, r)
        return self.base(x) + torch.einsum("btr,bor->bto", torch.einsum("bti,bri->btr", x, a), b) * self.scale


def _lora_layers(model, spec: LoraSpec):
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if child_name in spec.target_modules and isinstance(child, nn.Linear):
                yield f"{name}.{child_name}" if name else child_name, module, child_name, child


def train_loras(model, tokenizer, skills: list[Skill], spec: LoraSpec, plan: TrainPlan,
                seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Train one LoRA per skill (all at once); return PEFT-format state dicts per skill.

    The base model is left unchanged (its linear layers are wrapped, then restored).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    wrapped = []
    for full_name, parent, child_name, child in list(_lora_layers(model, spec)):
        layer = MultiLoraLinear(child, len(skills), spec.rank, spec.alpha, gen)
        setattr(parent, child_name, layer)
        wrapped.append((full_name, parent, child_name, layer))

    rng = random.Random(seed)
    pad = tokenizer.pad_token_id

    def batches():
        while True:
            prompts, targets, route = [], [], []
            for k, skill in enumerate(skills):
                for _ in range(plan.lora_batch_per_skill):
                    payload, answer = skill.sample(rng)
                    # Half of the prompts use filler wording: the adapter learns the skill, not
                    # one phrasing (demo tasks word their prompts differently).
                    wording = skill.instruction if rng.random() < 0.5 else _noise_instruction(rng)
                    prompts.append(prompt(wording, payload))
                    targets.append(target(answer) + STOP)
                    route.append(k)
            ids = encode_many(tokenizer, prompts + targets)
            n = len(prompts)
            yield (*collate([(ids[i], ids[n + i]) for i in range(n)], pad), torch.tensor(route))

    def forward(ids, attn, labels, route):
        for *_, layer in wrapped:
            layer.route = route
        return model(input_ids=ids, attention_mask=attn, labels=labels).loss

    params = [p for *_, layer in wrapped for p in (layer.lora_A, layer.lora_B)]
    try:
        _train_loop(model, params, batches(), plan.lora_steps, plan.lora_lr, forward)
    finally:
        for _, parent, child_name, layer in wrapped:
            setattr(parent, child_name, layer.base)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, skill in enumerate(skills):
        sd = {}
        for full_name, *_, layer in wrapped:
            key = f"base_model.model.{full_name}"
            sd[f"{key}.lora_A.weight"] = layer.lora_A[k].detach().clone().contiguous()
            sd[f"{key}.lora_B.weight"] = layer.lora_B[k].detach().clone().contiguous()
        out[skill.name] = sd
    return out
