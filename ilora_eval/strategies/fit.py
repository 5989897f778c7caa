"""`TaskFit`: what a strategy learned for one task, typed.

Three kinds, one shape: `compositions` holds one composition for a task-level strategy ("weights":
LoraHub's learned weights; "adapter": single_best's one chosen adapter) or one per adaptation
example ("examples": iLoraComp, with each example's embedding to route documents by). Learned
weights are kept as the search returned them, zeros included, so the record lists every adapter
the search weighed; routing drops the zeros (`Composition.of`).

`to_json()` is what the fit cache stores and `named(ids)` what the results JSON reports under
`ilora_tasks[task].learned`; both keep the shapes of the untyped dicts that came before.
"""

from __future__ import annotations

from dataclasses import dataclass

from ilora_eval.composition import Composition

KINDS = ("weights", "adapter", "examples")


def _dense(indices, weights) -> Composition:
    return Composition(tuple(int(i) for i in indices), tuple(float(w) for w in weights))


@dataclass
class TaskFit:
    compositions: list[Composition]
    kind: str = "weights"
    example_embeddings: list[list[float]] | None = None  # "examples": one unit-norm row per example

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown fit kind {self.kind!r}")
        if self.kind == "examples":
            if self.example_embeddings is None or len(self.example_embeddings) != len(self.compositions):
                raise ValueError("an examples fit needs one embedding per example composition")
        elif len(self.compositions) != 1 or self.example_embeddings is not None:
            raise ValueError(f"a {self.kind} fit holds exactly one composition and no embeddings")
        if self.kind == "adapter" and len(self.compositions[0].indices) != 1:
            raise ValueError("an adapter fit holds one adapter")

    @classmethod
    def weights(cls, indices, weights) -> "TaskFit":
        return cls([_dense(indices, weights)])

    @classmethod
    def adapter(cls, index: int) -> "TaskFit":
        return cls([_dense([index], [1.0])], kind="adapter")

    @classmethod
    def examples(cls, per_example: list[tuple[list[int], list[float]]], embeddings) -> "TaskFit":
        return cls([_dense(i, w) for i, w in per_example], kind="examples",
                   example_embeddings=[[float(x) for x in row] for row in embeddings])

    def composition(self, example: int = 0) -> Composition:
        """The composition to route with (zero weights dropped)."""
        comp = self.compositions[example]
        return Composition.of(comp.indices, comp.weights)

    # ------------------------------------------------------------------ JSON forms
    def to_json(self) -> dict:
        if self.kind == "adapter":
            return {"adapter": self.compositions[0].indices[0]}
        pairs = [{"indices": list(c.indices), "weights": list(c.weights)} for c in self.compositions]
        if self.kind == "examples":
            return {"examples": pairs, "example_embeddings": self.example_embeddings}
        return pairs[0]

    @classmethod
    def from_json(cls, data: dict) -> "TaskFit":
        """Raises ValueError/KeyError/TypeError on anything that is not a fit's JSON form."""
        if not isinstance(data, dict):
            raise TypeError("a fit is a JSON object")
        if "examples" in data:
            return cls.examples([(e["indices"], e["weights"]) for e in data["examples"]], data["example_embeddings"])
        if "adapter" in data:
            return cls.adapter(int(data["adapter"]))
        return cls.weights(data["indices"], data["weights"])

    def named(self, ids: list[str]) -> dict:
        """The results-JSON form: adapter ids instead of library indices, no embeddings."""
        if self.kind == "adapter":
            return {"adapter": ids[self.compositions[0].indices[0]]}
        pairs = [{"adapters": [ids[i] for i in c.indices], "weights": list(c.weights)} for c in self.compositions]
        return {"examples": pairs} if self.kind == "examples" else pairs[0]
