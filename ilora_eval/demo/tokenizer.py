"""Tokenizer of the demo model, built with `tokenizers`: whole words with a character fallback.

Its vocabulary is read from the demo's synthetic text: every word of two letters or more
that the instructions and payload vocabularies use is one token (with or without a leading
space); anything else falls back to single characters (printable ASCII, each also with a
leading space), so random letter strings are spelled out letter by letter and any ASCII text
round-trips exactly (``decode(ids(s)) == s``). Short sequences keep CPU training fast.

A few reserved ``<latent_k>`` tokens exist only to pretrain the base model (``train.py``);
no demo prompt contains them.
"""

from __future__ import annotations

import re
import string
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
CHARS = sorted(set(string.ascii_letters + string.digits + string.punctuation))
WHITESPACE = (" ", "\n", "\t")


def latent_token(k: int) -> str:
    return f"<latent_{k}>"


def corpus_words(texts: Iterable[str]) -> list[str]:
    """Whole-word tokens: the distinct words (two letters or more) of ``texts``, sorted."""
    return sorted({w for t in texts for w in re.findall(r"[A-Za-z]+", t) if len(w) > 1})


def build_tokenizer(words: Iterable[str], n_latent: int) -> PreTrainedTokenizerFast:
    """Deterministic: the vocabulary depends on the sorted ``words`` and ``n_latent`` only."""
    words = sorted(set(words))
    pieces = [w for word in words for w in (word, " " + word)]
    pieces += [c for ch in CHARS for c in (ch, " " + ch)]
    pieces += list(WHITESPACE)
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    for k in range(n_latent):
        vocab[latent_token(k)] = len(vocab)

    longest_first = sorted(words, key=lambda w: (-len(w), w))
    alternation = "|".join(re.escape(w) for w in longest_first)
    pattern = (rf" ?(?:{alternation})(?![A-Za-z])" if words else "") + r"| ?[^\s]|\s"
    if pattern.startswith("|"):
        pattern = pattern[1:]

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
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

