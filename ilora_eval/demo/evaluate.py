"""Greedy decoding + exact match for the demo model (a check independent of lm_eval)."""

from __future__ import annotations

from typing import Sequence

import torch

from ilora_eval.demo.skills import STOP


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 12,
                    batch_size: int = 128) -> list[str]:
    """Continuations of ``prompts`` up to (excluding) the first newline, like lm_eval's
    ``generate_until`` with ``until: ["\\n"]`` and greedy decoding."""
    stop_id = tokenizer.convert_tokens_to_ids(STOP)
    model.eval()
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start: start + batch_size])
        enc = tokenizer(chunk, add_special_tokens=False, padding=True, padding_side="left",
                        return_tensors="pt")
        out = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[stop_id, tokenizer.eos_token_id],
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in out[:, enc["input_ids"].shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            outputs.append(text.split(STOP)[0])
    return outputs


def exact_match(model, tokenizer, docs: Sequence[dict], **kwargs) -> float:
    """Fraction of ``docs`` (``{"input", "target"}``) whose greedy continuation equals the target."""
    if not docs:
        return 0.0
    preds = greedy_generate(model, tokenizer, [d["input"] for d in docs], **kwargs)
    return sum(p == d["target"] for p, d in zip(preds, docs)) / len(docs)


def load_base(base_dir):
    """The demo base model and tokenizer from ``DemoAssets.base_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    model.eval()
    return model, tokenizer


def skill_scores(assets, skills: Sequence[str] | None = None, limit: int | None = None) -> dict[str, dict[str, float]]:
    """Exact match of the base model and of each skill's LoRA alone on that skill's held-out
    examples: ``{skill: {"base": em, "lora": em}}``. Adapters are loaded with
    ``PeftModel.from_pretrained`` from the library, the base from ``save_pretrained`` files."""
    from peft import PeftModel

    from ilora_eval.demo.tasks import read_jsonl

    model, tokenizer = load_base(assets.base_dir)
    names = list(skills) if skills is not None else list(assets.skills)
    docs = {n: read_jsonl(assets.skill_eval_file(n))[:limit] for n in names}
    scores = {n: {"base": exact_match(model, tokenizer, docs[n])} for n in names}
    peft_model = None
    for n in names:
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(assets.adapter_dir(n)), adapter_name=n)
        else:
            peft_model.load_adapter(str(assets.adapter_dir(n)), adapter_name=n)
        peft_model.set_adapter(n)
        scores[n]["lora"] = exact_match(peft_model, tokenizer, docs[n])
    return scores
