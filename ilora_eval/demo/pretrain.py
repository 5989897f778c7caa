"""The demo base model: a tiny Llama pretrained on a latent-skill mixture (see ``train.py``).

Mixture: ``copy_frac`` of the prompts carry no latent token and are answered by echoing the
payload; ``compose_frac`` carry two latent tokens (a digit producer, then a digit consumer)
and are answered with the chain; the rest carry one skill's latent token. Instructions are
a skill's training wording or filler words, never tied to the answer. Pairs used by the
demo's composed task (``COMPOSITES``) are left out.
"""

from __future__ import annotations

import random

import torch

from ilora_eval.demo.skills import (COMPOSITES, DIGIT_CONSUMERS, DIGIT_PRODUCERS, STOP, Skill, chain_sample, prompt,
                                    target)
from ilora_eval.demo.specs import BASE_MODEL_NAME, ModelSpec, TrainPlan
from ilora_eval.demo.train import collate, encode_many, noise_instruction, train_loop

REAL_WORDING_FRAC = 0.3


class PretrainMixture:
    def __init__(self, tokenizer, skills: list[Skill], latent_ids: dict[str, int], plan: TrainPlan, seed: int):
        self.tok = tokenizer
        self.skills = skills
        self.latent_ids = latent_ids
        self.copy_frac = plan.copy_frac
        self.compose_frac = plan.compose_frac
        self.rng = random.Random(f"{seed}:pretrain")
        names = [s.name for s in skills]
        held_out = {(c.first, c.second) for c in COMPOSITES}
        self.pairs = [(a, b) for a in DIGIT_PRODUCERS if a in names
                      for b in DIGIT_CONSUMERS if b in names and (a, b) not in held_out]
        self.instructions = [s.instruction for s in skills]

    def _instruction(self) -> str:
        rng = self.rng
        return rng.choice(self.instructions) if rng.random() < REAL_WORDING_FRAC else noise_instruction(rng)

    def example(self) -> tuple[list[int], str, str]:
        """(latent token ids, prompt text, target text)."""
        rng = self.rng
        r = rng.random()
        if r < self.copy_frac:
            payload, _ = rng.choice(self.skills).sample(rng)
            latents, answer = [], payload
        elif r < self.copy_frac + self.compose_frac and self.pairs:
            first, second = rng.choice(self.pairs)
            payload, answer = chain_sample(first, second, rng)
            latents = [self.latent_ids[first], self.latent_ids[second]]
        else:
            skill = rng.choice(self.skills)
            payload, answer = skill.sample(rng)
            latents = [self.latent_ids[skill.name]]
        return latents, prompt(self._instruction(), payload), target(answer) + STOP

    def batch(self, n: int) -> list[tuple[list[int], list[int]]]:
        examples = [self.example() for _ in range(n)]
        ids = encode_many(self.tok, [e[1] for e in examples] + [e[2] for e in examples])
        return [(latents + ids[i], ids[n + i]) for i, (latents, _, _) in enumerate(examples)]


def make_base_model(tokenizer, spec: ModelSpec, seed: int):
    from transformers import LlamaForCausalLM

    from ilora_eval.testing import llama_config, random_init

    eos = tokenizer.eos_token_id
    config = llama_config(len(tokenizer), spec.hidden, spec.intermediate, spec.layers, spec.heads, spec.heads,
                          spec.max_positions, pad=tokenizer.pad_token_id, eos=eos, bos=eos, tie=True)
    model = random_init(LlamaForCausalLM, config, seed)
    model.config._name_or_path = BASE_MODEL_NAME
    return model


def pretrain_base(model, tokenizer, skills: list[Skill], latent_ids: dict[str, int], plan: TrainPlan,
                  seed: int) -> list[float]:
    """Train ``model`` in place; returns the loss per step."""
    mix = PretrainMixture(tokenizer, skills, latent_ids, plan, seed)
    pad = tokenizer.pad_token_id

    def batches():
        while True:
            yield collate(mix.batch(plan.pretrain_batch), pad)

    def loss_fn(ids, attn, labels):
        return model(input_ids=ids, attention_mask=attn, labels=labels).loss

    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    return train_loop(model, params, batches(), plan.pretrain_steps, plan.pretrain_lr, loss_fn)
