"""The composition table: the registered compositions of a model and, for the forward pass in
flight, which one each batch row uses.

One `CompositionState` is shared by every wrapped module of a model, so a row's composition id is
set once per forward (not once per module) and a composition registered by routing is the same id
everywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ilora_eval.composition.registry import get_mode
from ilora_eval.errors import IloraError

BASE = 0  # composition id of "no adapter"
# the built-in mixing modes (classes in `modes`; `modes.mode_names()` also lists modes registered later)
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
    # [batch] composition ids for the forward in flight (set it with `with state.rows(ids):`)
    row_ids: torch.Tensor | None = None
    transient_from: int | None = None  # ids >= this are search candidates: never cached
    arrow_k: int = 3
    arrow_temperature: float = 1.0
    # library adapters kept on the device (an LRU; a forward needing more holds them all while it runs)
    adapter_cache: int = 256
    _plans: dict = field(default_factory=dict)
    _slots: "AdapterSlots | None" = None
    _mixing: tuple | None = None  # (mode name, its MixingMode): looked up once, not per module per forward

    @property
    def slots(self) -> "AdapterSlots":
        """Which library adapters are on the device, in which slot: one table for every wrapped
        module, so an adapter has the same slot in all of them."""
        if self._slots is None:
            self._slots = AdapterSlots(self.adapter_cache)
        return self._slots

    def __post_init__(self):
        self.mixing  # validates the mode where it enters: a one-line error naming the known modes
        self.ids[self.compositions[0]] = BASE

    @property
    def mixing(self):
        """The `modes.MixingMode` named by `mode` (the layer calls it; it never branches on the name)."""
        hit = self._mixing
        if hit is None or hit[0] != self.mode:
            hit = self._mixing = (self.mode, get_mode(self.mode))
        return hit[1]

    @contextmanager
    def rows(self, ids):
        """`with state.rows(ids):` the forwards inside use composition `ids[b]` for batch row b
        (None: the base model); on exit the rows in force before are back, however the block ends."""
        previous = self.row_ids
        self.set_rows(ids)
        try:
            yield self
        finally:
            self.row_ids = previous
            self._plans = {}

    def set_rows(self, rows) -> None:
        """Composition id per batch row for the next forward passes (None: base model). Prefer
        `with state.rows(ids):`, which also puts the previous rows back. The ids are checked here,
        where they enter: a 1-D sequence of registered composition ids."""
        if rows is not None:
            rows = torch.as_tensor(rows, dtype=torch.long)
            if rows.dim() != 1 or rows.numel() == 0:
                raise IloraError(f"composition rows must be one id per batch row (a non-empty 1-D sequence), "
                                 f"got shape {tuple(rows.shape)}; pass state.rows([id_row0, id_row1, ...])")
            lo, hi = int(rows.min()), int(rows.max())
            if lo < 0 or hi >= len(self.compositions):
                bad = lo if lo < 0 else hi
                raise IloraError(f"composition id {bad} is not registered (ids 0..{len(self.compositions) - 1} are); "
                                 "use the id state.register(composition) returned")
        self.row_ids = rows
        self._plans = {}

    @contextmanager
    def candidates(self):
        """`with state.candidates() as register:` a scoped table for the search's transient
        compositions: ids `register(comp)` gives inside are never cached by the layers, and those
        new to the table are dropped on exit (the table does not grow with every search step);
        compositions already registered (e.g. by routing) keep their ids and their caches."""
        if self.transient_from is not None:
            raise IloraError("internal: candidate tables do not nest; finish one search step before starting another")
        first = len(self.compositions)
        self.transient_from = first
        try:
            yield self.register
        finally:
            self.transient_from = None
            for comp in self.compositions[first:]:
                self.ids.pop(comp, None)
            del self.compositions[first:]
            self._plans = {}

    def plan(self, batch: int, device) -> "RowPlan":
        """Computed once per forward (not once per module): which compositions, which row uses which."""
        key = (batch, str(device))
        plan = self._plans.get(key)
        if plan is None:
            rows = _match_rows(self.row_ids, batch)
            uniq, inverse = torch.unique(rows, return_inverse=True)
            plan = RowPlan(uniq.tolist(), inverse.to(device), None, None, cids=rows.tolist())
            self.mixing.prepare(plan, self, device)
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


class AdapterSlots:
    """Slot assignment of the device-resident library adapters, LRU-bounded by `capacity`.

    Each reassignment of a slot gets a new generation number; a module whose copy of a slot has
    an older generation reloads that slot from the host. `ensure` never evicts an adapter it was
    asked for, so one call may hold more than `capacity` (then the next call that fits starts
    over, giving the memory back)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise IloraError(f"adapter_cache={capacity} must be >= 1 (library adapters held on the device)")
        self.capacity = capacity
        self.slot_of: OrderedDict[int, int] = OrderedDict()  # adapter -> slot, least recently used first
        self.owner: list[int] = []  # slot -> adapter
        self.generation: list[int] = []  # slot -> when it was (re)assigned
        self.tick = 0  # bumped on every (re)assignment: plans remapped under an older tick are stale
        self.loads = 0  # adapters put in a slot (for the benchmarks)

    def __len__(self) -> int:
        return len(self.owner)

    def ensure(self, adapters) -> list[int]:
        """The slot of each of `adapters` (library indices), assigning slots to those not resident."""
        need = list(dict.fromkeys(int(a) for a in adapters))
        if len(self.owner) > self.capacity and len(need) <= self.capacity:
            self.slot_of.clear()  # an oversized call is over: shrink back to at most `capacity`
            self.owner, self.generation = [], []
            self.tick += 1
        wanted = set(need)
        for a in need:
            if a in self.slot_of:
                self.slot_of.move_to_end(a)
        victims = (a for a in list(self.slot_of) if a not in wanted)
        for a in need:
            if a in self.slot_of:
                continue
            self.tick += 1
            self.loads += 1
            victim = next(victims, None) if len(self.owner) >= self.capacity else None
            if victim is None:
                slot = len(self.owner)
                self.owner.append(a)
                self.generation.append(self.tick)
            else:
                slot = self.slot_of.pop(victim)
                self.owner[slot] = a
                self.generation[slot] = self.tick
            self.slot_of[a] = slot
        return [self.slot_of[a] for a in need]

    def lookup(self, adapters) -> list[int]:
        return [self.slot_of[int(a)] for a in adapters]


@dataclass
class RowPlan:
    uniq: list[int]
    inverse: torch.Tensor
    out_idx: torch.Tensor | None  # output mode: [batch, k] adapter indices
    out_w: torch.Tensor | None  # output mode: [batch, k] weights
    # per module: its per-row factors, gathered once and reused by every decoding step
    row_factors: dict = field(default_factory=dict)
    cids: list[int] = field(default_factory=list)  # composition id per row, on the host
    # output mode with the library on the host: per device, (slot tick, the rows' adapter slots [b, k])
    slot_idx: dict = field(default_factory=dict)


def _match_rows(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Generation expands rows (beams, sampled returns): repeat each row's id accordingly."""
    if rows.numel() == batch:
        return rows
    if batch % rows.numel() == 0:
        return rows.repeat_interleave(batch // rows.numel())
    raise IloraError(f"a batch of {batch} rows reached the composed layer with {rows.numel()} composition ids; "
                     "set one id per batch row (with state.rows(ids)) for the batch being run")
