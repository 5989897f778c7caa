"""Character-level tokenizer of the demo model, built with `tokenizers`.

One token per printable ASCII character (plus newline), so string skills such as "reverse"
or "sort the letters" act on single tokens. A few reserved ``<latent_k>`` tokens exist only
for pretraining the base model (see ``train.py``); no demo prompt contains them.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
ALPHABET = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n"))


def latent_token(k: int) -> str:
    return f"<latent_{k}>"


def build_tokenizer(n_latent: int) -> PreTrainedTokenizerFast:
    """Deterministic: the vocabulary depends on ``n_latent`` only."""
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for ch in ALPHABET:
        vocab[ch] = len(vocab)
    for k in range(n_latent):
        vocab[latent_token(k)] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    # Latent tokens are whole-string matches, not characters: register them as added tokens.
    hf.add_tokens([latent_token(k) for k in range(n_latent)])
    return hf


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]
