"""The task pack's metric: LoraHub's answer normaliser and exact match (lm-eval metric interface)."""

from __future__ import annotations

from typing import Any, Sequence


def lorahub_normalize(text: Any) -> str:
    """LoraHub's answer normaliser: ``strip().lower()``, then every period removed (in that order)."""
    return str(text).strip().lower().replace(".", "")


def exact_match(references: Sequence[str], predictions: Sequence[str], **_ignored) -> float:
    """Exact match after `lorahub_normalize` on both sides (lm-eval metric interface).

    lm-eval calls a task metric with one reference and one prediction per document; the mean
    over the documents is taken by the `aggregation: mean` of the YAML.
    """
    refs, preds = list(references), list(predictions)
    if len(refs) != len(preds) or not refs:
        raise ValueError(f"exact_match: got {len(refs)} references and {len(preds)} predictions")
    hits = [lorahub_normalize(r) == lorahub_normalize(p) for r, p in zip(refs, preds)]
    return float(sum(hits)) / len(hits)
