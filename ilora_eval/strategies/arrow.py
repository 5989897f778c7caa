"""Arrow (Ostapenko et al. 2024): training-free per-token routing over the library, no embedder
and no labelled examples. The composition layer does the routing (mode "arrow"); every document
uses the same composition: all adapters, or the `top_k` nearest to it by centroid similarity."""

from __future__ import annotations

from dataclasses import dataclass

from ilora_eval.composition import Composition
from ilora_eval.strategies.base import Routing, Strategy, StrategyConfig, at_least, check_top_k, top_k


@dataclass
class ArrowConfig(StrategyConfig):
    arrow_k: int = 3  # adapters mixed per token (PEFT ArrowConfig's top_k)
    arrow_temperature: float = 1.0  # PEFT ArrowConfig's router_temperature
    top_k: int = 0  # 0: route over the whole library; k: over each document's k nearest adapters

    def validate(self) -> None:
        super().validate()
        at_least(self, "arrow_k", 1)
        at_least(self, "arrow_temperature", 0, strict=True)
        at_least(self, "top_k", 0, why=" (0: the whole library)")


class ArrowStrategy(Strategy, name="arrow"):
    Config = ArrowConfig
    composition_mode = "arrow"

    def route(self, task, doc_texts):
        n = len(self.env.ids)
        if not self.config.top_k:
            return [Routing(Composition.of(range(n), [1.0] * n))] * len(doc_texts)
        check_top_k(self.config.top_k, n)
        sims = self.env.embed(doc_texts) @ self.env.library_centroids().T
        return [Routing(Composition.of(top_k(s, self.config.top_k), [1.0] * self.config.top_k)) for s in sims]
