"""Tiny offline models, tokenizers and LoRA adapters, shared by the tests, the benchmarks and the demo.

Everything here is deterministic from a seed and needs no network:

* tokenizers: ``make_tokenizer`` (a small byte-level BPE trained on ``WORDS``; optionally T5-style
  ``</s>`` closing) and ``make_word_tokenizer`` (one token per pseudo-word ``word(i)``, so token counts
  are exact: the benchmarks');
* models: ``random_init`` (any ``transformers`` model class from a config, under ``torch.manual_seed``)
  and ``make_model`` (a random Llama / GPT-2 / T5 saved with its tokenizer);
* adapters: ``make_adapter`` (PEFT's own ``save_pretrained`` with random non-zero A and B),
  ``write_lora_adapter`` (safetensors + config written directly, as PEFT writes them: fast for big
  libraries), ``write_texts`` (an adapter's ``texts.jsonl``), ``make_library`` (topic adapters);
* tasks: ``write_task`` (a local JSON lm-eval task with a held-out ``adapt`` split).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

from ilora_eval.library import TEXTS_NAME

WORDS = ("the quick brown fox jumps over lazy dog cat sat on mat true false yes no answer question "
         "red green blue one two three four five sort reverse count add list word letters numbers "
         "A B C D E ( ) . , : ? ! Q").split()
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]  # ids 0..3: pad, eos, unk, bos


# --------------------------------------------------------------------------- tokenizers
def _fast(tok, path: Path | None):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")
    if path is not None:
        fast.save_pretrained(path)
    return fast


def make_tokenizer(path: Path, append_eos: bool = False):
    """A byte-level BPE tokenizer; `append_eos` closes every encoding with `</s>`, as T5's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4
    tok.train_from_iterator(corpus, trainer)
    if append_eos:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return _fast(tok, path)


_SYL = [c + v for c in "bdfghjklmnprstvz" for v in "aeiou"]  # 80 syllables


def word(i: int) -> str:
    """The i-th pseudo-word (three syllables: 512 000 distinct words)."""
    n = len(_SYL)
    return _SYL[i % n] + _SYL[(i // n) % n] + _SYL[(i // (n * n)) % n]


def make_word_tokenizer(path: Path, vocab: int):
    """Word-level tokenizer: one token per whitespace-separated pseudo-word ``word(i)`` (id 4 + i),
    ``vocab`` tokens in all, special tokens included."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    n_words = vocab - len(SPECIALS)
    if n_words < 16:
        raise ValueError(f"vocab={vocab} is too small")
    table = {t: i for i, t in enumerate(SPECIALS)}
    for i in range(n_words):
        table[word(i)] = len(SPECIALS) + i
    tok = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _fast(tok, path)


# --------------------------------------------------------------------------- models
def random_init(model_cls, config, seed: int):
    """``model_cls(config)`` with its weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return model_cls(config)


def llama_config(vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int | None = None,
                 max_positions: int = 128, pad: int = 0, eos: int = 1, bos: int = 3, tie: bool = False):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
                       max_position_embeddings=max_positions, pad_token_id=pad, eos_token_id=eos, bos_token_id=bos,
                       tie_word_embeddings=tie)


def make_model(path: Path, kind: str = "llama", seed: int = 0, append_eos: bool = False):
    """kind: llama | gpt2 | t5. Random init, saved with its tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    path.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(path, append_eos=append_eos)
    if kind == "llama":
        cls, cfg = LlamaForCausalLM, llama_config(len(tok), 32, 64, 2, 4, 2)
    elif kind == "gpt2":
        cls, cfg = GPT2LMHeadModel, GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                               pad_token_id=0, eos_token_id=1, bos_token_id=3)
    elif kind == "t5":
        cls, cfg = T5ForConditionalGeneration, T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64,
                                                        num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1,
                                                        decoder_start_token_id=0)
    else:
        raise ValueError(kind)
    model = random_init(cls, cfg, seed)
    model.save_pretrained(path)
    return model


# --------------------------------------------------------------------------- adapters
TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "t5": ["q", "v"]}


def write_texts(adapter_dir: Path, texts: Iterable[str]) -> None:
    """An adapter's ``texts.jsonl``: one ``{"text": ...}`` a line (what the library routes on)."""
    with open(adapter_dir / TEXTS_NAME, "w", encoding="utf-8") as fh:
        for text in texts:
            fh.write(json.dumps({"text": text}) + "\n")


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
        write_texts(out, texts)
    return out


def linear_shapes(model, targets: list[str]) -> dict[str, tuple[int, int]]:
    """module path -> (d_in, d_out) of every Linear whose last name is a target."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            out[name] = (mod.in_features, mod.out_features)
    return out


def write_lora_adapter(out: Path, shapes: dict[str, tuple[int, int]], rank: int, alpha: float, targets: list[str],
                       base_name: str, g: torch.Generator, b_std: float = 0.02) -> Path:
    """A PEFT LoRA adapter written directly (safetensors + config as PEFT's save_pretrained writes them),
    without loading the base model: A ~ N(0, 1/d_in), B ~ N(0, b_std²), drawn from ``g`` module by module."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for path, (d_in, d_out) in shapes.items():
        tensors[f"base_model.model.{path}.lora_A.weight"] = torch.randn(rank, d_in, generator=g) / d_in ** 0.5
        tensors[f"base_model.model.{path}.lora_B.weight"] = torch.randn(d_out, rank, generator=g) * b_std
    save_file(tensors, str(out / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_name, "r": rank,
           "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": targets, "bias": "none",
           "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "inference_mode": True}
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
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
    """``n`` PEFT adapters ``NN_<topic>`` (seeds 100 + i), each with its topic's texts."""
    names = []
    topics = list(TOPICS)
    for i in range(n):
        topic = topics[i % len(topics)]
        name = f"{i:02d}_{topic}"
        make_adapter(base_path, lib / name, kind, seed=100 + i, texts=TOPICS[topic], **kw)
        names.append(name)
    return names


# --------------------------------------------------------------------------- tasks
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
