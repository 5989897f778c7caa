"""The library index: one centroid (mean sentence embedding of its texts) per adapter.

Written next to the adapters as `centroids.safetensors` + `index.json` (base model, rank, target
modules, embedder id and a per-adapter content digest). A stale index (an adapter changed, or
another embedder) is refused rather than silently rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ilora_eval.embeddings import Embedder
from ilora_eval.errors import IloraError
from ilora_eval.util import write_atomic
from ilora_eval.library import LoraLibrary

INDEX_JSON = "index.json"
CENTROIDS = "centroids.safetensors"
INDEX_VERSION = 1


CHUNK_TEXTS = 4096  # texts per encoder call: one stream over all adapters, bounded memory


def missing_texts_message(names: list[str], library_arg: str = "LIB") -> str:
    """One line naming every adapter without texts (the first 20, then a count), and the fixes."""
    shown = repr(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return (f"adapters {shown} have no texts.jsonl (or it is empty); add a sample of each adapter's training texts as "
            f"texts.jsonl, or sample them from a local dataset: `ilora-eval library build {library_arg} --texts-from DATA "
            "--task-column COLUMN` (strategies arrow, lorahub and uniform need no texts)")


def build_index(library: LoraLibrary, embedder: Embedder, *, max_texts: int = 200, progress: bool = True,
                chunk: int = CHUNK_TEXTS) -> Path:
    missing = [e.name for e in library.entries if not library.texts.get(e.name)]
    if missing:
        raise IloraError(missing_texts_message(missing))
    from tqdm.auto import tqdm

    centroids = {}
    counts = [min(len(library.texts[e.name]), max_texts) for e in library.entries]
    bar = tqdm(total=sum(counts), desc=f"Embedding the texts of {len(library)} adapters", unit="text",
               disable=not progress)
    group: list[str] = []
    texts: list[str] = []

    def flush():
        # one encoder call for the whole group; each centroid is the mean of its own rows, the same
        # numbers as encoding the adapter's texts alone (for embedders that embed each text alone)
        emb = embedder.encode(texts) if texts else None
        start = 0
        for name in group:
            n = min(len(library.texts[name]), max_texts)
            c = emb[start:start + n].mean(axis=0)
            centroids[name] = torch.from_numpy(c / max(np.linalg.norm(c), 1e-12))
            start += n
        bar.update(len(texts))
        group.clear()
        texts.clear()

    for entry, n in zip(library.entries, counts):
        group.append(entry.name)
        texts.extend(library.texts[entry.name][:max_texts])
        if len(texts) >= chunk:
            flush()
    flush()
    bar.close()
    meta = {
        "version": INDEX_VERSION,
        "embedder": embedder.name,
        "base_model": library.spec.base_model,
        "rank": library.spec.rank,
        "target_modules": list(library.spec.target_modules),
        "library_hash": library.content_hash,
        "adapters": library.digests,
        "max_texts": max_texts,
    }
    out = library.index_dir
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    write_atomic(out / CENTROIDS, lambda p: save_file(centroids, p))
    write_atomic(out / INDEX_JSON, json.dumps(meta, indent=2))
    return out


def load_centroids(library: LoraLibrary, embedder: Embedder) -> np.ndarray:
    """Centroids [N, dim] in library order; builds the index when there is none."""
    meta_path = library.index_dir / INDEX_JSON
    if not meta_path.is_file():
        build_index(library, embedder)
    meta = json.loads(meta_path.read_text())
    fix = f"rebuild it with `ilora-eval library build <library> --embedder {embedder.name}`"
    if meta.get("embedder") != embedder.name:
        raise IloraError(f"library index {library.index_dir} was built with embedder {meta.get('embedder')!r}, not {embedder.name!r}; {fix}")
    indexed = meta.get("adapters", {})
    stale = [n for n, d in library.digests.items() if indexed.get(n) != d]
    if stale:
        raise IloraError(f"library index {library.index_dir} is stale for adapters {stale[:5]} (changed or added since it was built); {fix}")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(library.index_dir / CENTROIDS))
    except Exception as err:
        raise IloraError(f"library index {library.index_dir / CENTROIDS} is unreadable ({type(err).__name__}); {fix}") from None
    return np.stack([tensors[n].numpy() for n in library.ids]).astype(np.float32)
