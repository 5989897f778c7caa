"""Tiny offline models, tokenizers and LoRA libraries built inside the tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("the quick brown fox jumps over lazy dog cat sat on mat true false yes no answer question "
         "red green blue one two three four five sort reverse count add list word letters numbers "
         "A B C D E ( ) . , : ? ! Q").split()


def make_tokenizer(path: Path, append_eos: bool = False):
    """A byte-level BPE tokenizer; `append_eos` closes every encoding with `</s>`, as T5's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4
    tok.train_from_iterator(corpus, trainer)
    if append_eos:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")
    fast.save_pretrained(path)
    return fast


def make_model(path: Path, kind: str = "llama", seed: int = 0, append_eos: bool = False):
    """kind: llama | gpt2 | t5. Random init, saved with its tokenizer."""
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, T5Config,
                              T5ForConditionalGeneration)

    path.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(path, append_eos=append_eos)
    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          pad_token_id=0, eos_token_id=1, bos_token_id=3, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                         pad_token_id=0, eos_token_id=1, bos_token_id=3)
        model = GPT2LMHeadModel(cfg)
    elif kind == "t5":
        cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        model = T5ForConditionalGeneration(cfg)
    else:
        raise ValueError(kind)
    model.save_pretrained(path)
    return model


TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "t5": ["q", "v"]}


def make_adapter(base_path: Path, out: Path, kind: str, seed: int, texts: list[str] | None = None, rank: int = 4,
                 alpha: int = 8, target_modules=None, scale: float = 0.5, base_name: str | None = None):
    """A PEFT LoRA adapter with random (non-zero) A and B, so it changes the logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if kind == "t5" else AutoModelForCausalLM
    model = auto.from_pretrained(base_path)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules or TARGETS[kind], lora_dropout=0.0,
                     fan_in_fan_out=(kind == "gpt2"))
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    peft_model.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data["base_model_name_or_path"] = base_name or base_path.name
    cfg_path.write_text(json.dumps(data))
    if texts:
        with open(out / "texts.jsonl", "w") as fh:
            for t in texts:
                fh.write(json.dumps({"text": t}) + "\n")
    return out


TOPICS = {
    "colors": ["red green blue", "blue red", "green and red colors"],
    "numbers": ["one two three", "four five one", "count numbers two"],
    "animals": ["fox dog cat", "the cat sat on the mat", "quick brown fox"],
    "logic": ["true false yes no", "false or true", "answer yes or no"],
    "sorting": ["sort the list", "reverse the word", "sort letters"],
    "questions": ["question answer", "Q: question A: answer", "answer the question"],
}


def make_library(base_path: Path, lib: Path, kind: str, n: int = 6, **kw) -> list[str]:
    names = []
    topics = list(TOPICS)
    for i in range(n):
        topic = topics[i % len(topics)]
        name = f"{i:02d}_{topic}"
        make_adapter(base_path, lib / name, kind, seed=100 + i, texts=TOPICS[topic], **kw)
        names.append(name)
    return names


def write_task(dir_: Path, name: str, output_type: str = "generate_until", n_docs: int = 6) -> Path:
    """A local JSON task with a test split and a held-out `adapt` split."""
    dir_.mkdir(parents=True, exist_ok=True)
    test = [{"input": f"{WORDS[i]} {WORDS[i + 3]} question", "target": "yes" if i % 2 else "no"} for i in range(n_docs)]
    adapt = [{"input": f"{WORDS[i + 10]} answer", "target": "yes" if i % 2 else "no"} for i in range(5)]
    for split, rows in (("test", test), ("adapt", adapt)):
        with open(dir_ / f"{name}_{split}.jsonl", "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    lines = [
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {dir_ / (name + '_test.jsonl')}",
        f"    adapt: {dir_ / (name + '_adapt.jsonl')}",
        "test_split: test",
        "fewshot_split: adapt",
        "num_fewshot: 0",
        'doc_to_text: "Q: {{input}}\\nA:"',
    ]
    if output_type == "multiple_choice":
        lines += ["output_type: multiple_choice", 'doc_to_choice: ["no", "yes"]',
                  'doc_to_target: "{{0 if target == \'no\' else 1}}"', "metric_list:", "  - metric: acc"]
    else:
        lines += ["output_type: generate_until", 'doc_to_target: " {{target}}"', "target_delimiter: ''",
                  "generation_kwargs:", '  until: ["\\n"]', "  max_gen_toks: 4", "  do_sample: false",
                  "metric_list:", "  - metric: exact_match"]
    path = dir_ / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
