"""Training-free instance level (LoraRetriever-style): per document, its top_k adapters by
similarity of its input to the centroids, weighted softmax(similarity / temperature)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ilora_eval.composition import Composition
from ilora_eval.strategies.base import Routing, Strategy, StrategyConfig, at_least, check_top_k, top_k


@dataclass
class RetrieveFuseConfig(StrategyConfig):
    top_k: int = 3
    temperature: float = 0.1

    def validate(self) -> None:
        super().validate()
        at_least(self, "top_k", 1, why=" (adapters per document)")
        at_least(self, "temperature", 0, strict=True)


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (x - x.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


class RetrieveFuseStrategy(Strategy, name="retrieve_fuse"):
    Config = RetrieveFuseConfig

    def route(self, task, doc_texts):
        check_top_k(self.config.top_k, len(self.env.ids))
        sims = self.env.embed(doc_texts) @ self.env.library_centroids().T
        out = []
        for row in sims:
            idx = top_k(row, self.config.top_k)
            out.append(Routing(Composition.of(idx, softmax(row[idx], self.config.temperature))))
        return out
