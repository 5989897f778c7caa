"""The composition table: the registered compositions of a model and, for the forward pass in
flight, which one each batch row uses.

One `CompositionState` is shared by every wrapped module of a model, so a row's composition id is
set once per forward (not once per module) and a composition registered by routing is the same id
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ilora_eval.errors import IloraError

BASE = 0  # composition id of "no adapter"
MODES = ("param", "output", "arrow")


@dataclass(frozen=True)
class Composition:
    """Sparse weights over library adapters (indices into the library order)."""

    indices: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def of(cls, indices, weights) -> "Composition":
        pairs = [(int(i), float(w)) for i, w in zip(indices, weights) if float(w) != 0.0]
        if not pairs:
            return cls((), ())
        i, w = zip(*pairs)
        return cls(tuple(i), tuple(w))

    @property
    def is_base(self) -> bool:
        return not self.indices


@dataclass
class CompositionState:
    """Shared by all wrapped modules of one model."""

    mode: str = "param"
    cache_size: int = 256
    compositions: list[Composition] = field(default_factory=lambda: [Composition((), ())])
    ids: dict[Composition, int] = field(default_factory=dict)
    rows: torch.Tensor | None = None  # [batch] composition ids for the forward in flight
    transient_from: int | None = None  # ids >= this are search candidates: never cached
    arrow_k: int = 3
    arrow_temperature: float = 1.0
    _plans: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise IloraError(f"composition={self.mode!r} is unknown; choose one of {', '.join(MODES)}")
        self.ids[self.compositions[0]] = BASE

    def set_rows(self, rows) -> None:
        """Composition id per batch row for the next forward passes (None: base model)."""
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
        self._plans = {}

    def plan(self, batch: int, device) -> "RowPlan":
        """Computed once per forward (not once per module): which compositions, which row uses which."""
        key = (batch, str(device))
        plan = self._plans.get(key)
        if plan is None:
            rows = _match_rows(self.rows, batch)
            uniq, inverse = torch.unique(rows, return_inverse=True)
            plan = RowPlan(uniq.tolist(), inverse.to(device), None, None)
            if self.mode == "output":
                comps = [self.compositions[c] for c in rows.tolist()]
                k = max(1, max(len(c.indices) for c in comps))
                idx = torch.zeros(batch, k, dtype=torch.long)
                w = torch.zeros(batch, k, dtype=torch.float32)
                for b, c in enumerate(comps):
                    idx[b, : len(c.indices)] = torch.tensor(c.indices, dtype=torch.long)
                    w[b, : len(c.indices)] = torch.tensor(c.weights, dtype=torch.float32)
                plan = RowPlan(plan.uniq, plan.inverse, idx.to(device), w.to(device))
            self._plans[key] = plan
        return plan

    def register(self, comp: Composition) -> int:
        if comp.is_base:
            return BASE
        cid = self.ids.get(comp)
        if cid is None:
            cid = len(self.compositions)
            self.compositions.append(comp)
            self.ids[comp] = cid
        return cid


@dataclass
class RowPlan:
    uniq: list[int]
    inverse: torch.Tensor
    out_idx: torch.Tensor | None  # output mode: [batch, k] adapter indices
    out_w: torch.Tensor | None  # output mode: [batch, k] weights
    # per module: its per-row factors, gathered once and reused by every decoding step
    row_factors: dict = field(default_factory=dict)


def _match_rows(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Generation expands rows (beams, sampled returns): repeat each row's id accordingly."""
    if rows.numel() == batch:
        return rows
    if batch % rows.numel() == 0:
        return rows.repeat_interleave(batch // rows.numel())
    raise IloraError(f"internal: batch of {batch} rows does not match {rows.numel()} composition ids")
