"""The strategy base class and its registry, what every strategy gets (`StrategyEnv`), learns
(`TaskFit` per task, in `state`; cached and broadcast by the router) and returns (`Routing` per
document), and one config dataclass per strategy built from lm-eval model_args.

A strategy registers itself by subclassing: `class MyStrategy(Strategy, name="mine")`."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from ilora_eval.adaptation import Example, TaskData
from ilora_eval.composition import Composition
from ilora_eval.errors import IloraError
from ilora_eval.strategies.fit import TaskFit
from ilora_eval.util import FALSE, TRUE


# adaptation examples per task: the n_adapt default of every strategy that takes one (written here only)
N_ADAPT = 5


@dataclass
class StrategyConfig:
    """Arguments common to every strategy."""

    # None: lm-eval's --seed of the run (its default 0 when not given); the router resolves it
    # before fitting and records which one was used
    seed: int | None = None

    def validate(self) -> None:
        """Range checks, before the model loads; subclasses extend it (and call it)."""
        if self.seed is not None:
            at_least(self, "seed", 0)  # numpy's and nevergrad's generators refuse negative seeds


@dataclass
class Routing:
    composition: Composition
    example: int | None = None  # index of the adaptation example the document was routed to


@dataclass
class StrategyEnv:
    """What the router hands every strategy; the strategy never reaches past it (to lm-eval, the
    model or the library).

    Attributes:
        ids: the library's adapter ids in library order; `Composition` indices point into it.
        centroids: `() -> [N, dim]` float array, unit-norm rows, one per adapter (lazy: the first
            call loads the embedder and the index; use `library_centroids()` to call it once).
        embed: `(texts) -> [len(texts), dim]` float array of unit-norm sentence embeddings.
        score: `(compositions, examples, objective="lorahub") -> list[float]`: for each composition
            `compositions[i]`, the weight search's loss on its adaptation examples `examples[i]`
            (LoraHub's objective by default, `"mean"` the pooled token mean; see
            `ilora_eval/scoring.py`), all rows scored in batched forwards of the live model.
        progress: show progress bars (rank 0 only).
        cache: a `FitCache` for learned strategies (keyed by everything a fit depends on), or None.
    """

    ids: list[str]
    centroids: Callable[[], np.ndarray]
    embed: Callable[[list[str]], np.ndarray]
    score: Callable[..., list[float]]  # (list[Composition], list[list[Example]], objective: str = "lorahub")
    progress: bool = True
    cache: object | None = None  # a FitCache for learned strategies, or None
    _centroids: np.ndarray | None = field(default=None, repr=False)

    def library_centroids(self) -> np.ndarray:
        if self._centroids is None:
            self._centroids = self.centroids()
        return self._centroids


class Strategy:
    registry: ClassVar[dict[str, type["Strategy"]]] = {}
    name: ClassVar[str]
    Config: ClassVar[type] = StrategyConfig
    needs_examples: ClassVar[bool] = False
    learned: ClassVar[bool] = False  # learns weights (worth caching, must agree across ranks)
    composition_mode: ClassVar[str | None] = None  # forces the layer's mode (arrow routes per token)

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            Strategy.registry[name] = cls

    def __init__(self, config, env: StrategyEnv):
        self.config = config
        self.env = env
        self.state: dict[str, TaskFit] = {}  # per task: what fit() learned (strategies that learn nothing: none)

    def fit(self, tasks: list[TaskData]) -> None:
        """Learn per task what routing needs; called once with all tasks of the run, on every rank.

        Args:
            tasks: one `TaskData` per task of the run: its name, its adaptation `examples`
                (prompt, target and the answer-free input used for retrieval; never a scored
                document), where they came from and their `doc_ids` in that source.

        Side effects: `self.state[task.name]` holds a `TaskFit` for every task of a learned
        strategy, from the fit cache when it holds one for the same key, else from `_fit` (whose
        searches of all tasks advance in lock-step). Training-free strategies learn nothing.

        Raises:
            IloraError: the strategy needs adaptation examples and a task has none.
        """
        for t in tasks:
            if self.needs_examples and not t.examples:
                raise IloraError(f"strategy={self.name} needs adaptation examples but task {t.name!r} has none "
                                 "(no fewshot split/samples, train or validation docs); use a task-pack task or "
                                 "strategy=retrieve_fuse/uniform/base")
        todo = [t for t in tasks if t.name not in self.state]
        cache = self.env.cache if self.learned else None
        if cache is not None:
            for t in list(todo):
                hit = cache.get(t)
                if hit is not None:
                    self.state[t.name] = hit
                    todo.remove(t)
        if todo:
            self._fit(todo)
            if cache is not None:
                for t in todo:
                    cache.put(t, self.state[t.name])

    def _fit(self, tasks: list[TaskData]) -> None:
        """Sets `self.state[task.name]` for each task (strategies that learn something)."""

    def route(self, task: TaskData, doc_texts: list[str]) -> list[Routing]:
        """Choose each document's composition.

        Args:
            task: the task the documents belong to (already fitted by `fit`).
            doc_texts: the documents' answer-free input text (lm-eval's `doc_to_text`), one per
                document; a scored document's answer is never passed in.

        Returns:
            One `Routing` per document, in order: its `Composition` (sparse weights over
            `env.ids`) and, for strategies that route to an adaptation example, that example's
            index in `task.examples`.
        """
        raise NotImplementedError


def top_k(sims: np.ndarray, k: int, order: str = "desc") -> np.ndarray:
    """Indices of the k most (desc) or least (asc, the reference code's sort) similar, stable."""
    keys = -sims if order == "desc" else sims
    if 0 < k < len(keys) // 4:
        # O(N), not a full sort per document (libraries of thousands): every key up to the k-th
        # smallest (ties included), in index order, then the stable sort of those few: the same
        # indices, in the same order, as the full stable sort
        kth = np.partition(keys, k - 1)[k - 1]
        if not np.isnan(kth):
            cand = np.flatnonzero(keys <= kth)
            return cand[np.argsort(keys[cand], kind="stable")][:k]
    return np.argsort(keys, kind="stable")[:k]


def check_top_k(k: int, n: int) -> None:
    if k > n:
        raise IloraError(f"top_k={k} is larger than the library ({n} adapters); lower top_k")
    if k < 1:
        raise IloraError(f"top_k={k} must be at least 1")


def strategy_class(name: str):
    try:
        return Strategy.registry[name]
    except KeyError:
        raise IloraError(f"strategy={name!r} is unknown; choose one of {', '.join(sorted(Strategy.registry))}") from None


def build_config(name: str, args: dict) -> StrategyConfig:
    """Pops the strategy's own arguments out of `args` (the remaining ones belong to HFLM)."""
    cls = strategy_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    hints = typing.get_type_hints(cls.Config)
    values = {}
    for key in list(args):
        if key in fields:
            values[key] = _coerce(name, key, args.pop(key), hints[key])
    cfg = cls.Config(**values)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def strategy_arg_names() -> set[str]:
    return {f.name for cls in Strategy.registry.values() for f in dataclasses.fields(cls.Config)}


def at_least(cfg, key: str, low: float, *, strict: bool = False, why: str = "") -> None:
    """One-line refusal of `key` below `low` (or equal to it, when `strict`)."""
    value = getattr(cfg, key)
    if value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise IloraError(f"{key}={value!r} must be {bound}{why}; fix {key}= in model_args")


def _coerce(strategy: str, key: str, value, hint):
    """lm-eval hands model_args over as int, float, bool or str (`1.5` arrives as a float, `nan`
    as float('nan')): a number that is not one, or not a whole one where an integer is meant, is
    refused rather than truncated or passed on."""
    target = next((t for t in typing.get_args(hint) if t is not type(None)), hint) if typing.get_origin(hint) else hint
    if value is None:
        return value
    if target is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in TRUE:
            return True
        if str(value).strip().lower() in FALSE:
            return False
        raise IloraError(f"{key}={value!r} is not true or false for strategy={strategy}; give {key}=true or {key}=false")
    if target in (int, float):
        return _number(strategy, key, value, target)
    try:
        return target(value)
    except (TypeError, ValueError):
        raise IloraError(f"{key}={value!r} is not a valid {target.__name__} for strategy={strategy}") from None


def _number(strategy: str, key: str, value, target: type):
    kind = "a whole number" if target is int else "a number"
    bad = IloraError(f"{key}={value!r} is not {kind} for strategy={strategy}; give e.g. {key}="
                     f"{'3' if target is int else '0.5'}")
    if isinstance(value, bool):  # True is an int to Python, not a count to anyone
        raise bad
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise bad from None
    if not isinstance(value, (int, float)):
        raise bad
    if isinstance(value, float) and not math.isfinite(value):
        raise IloraError(f"{key}={value!r} is not a finite number for strategy={strategy}; give a finite {key}=")
    if target is int:
        if isinstance(value, float):
            if not value.is_integer():  # budget=1.5 must not quietly become 1
                raise bad
            value = int(value)
        return value
    return float(value)
