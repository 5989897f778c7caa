"""Run labels and seed groups for `ilora-eval compare`.

A run's label names its configuration: `ilora:<strategy>(<args>)@<base model>` for our model and
`hf@<base>` / `hf(peft=<adapter>)@<base>` for stock ones. <args> are the arguments given
explicitly in model_args plus every setting whose value differs between compared runs of the
same model and strategy (strategy arguments, library, composition, embedder, exclusions, other
model args, --limit, seeds), so two configurations never share a label; true duplicates (same
configuration and seed) get `#2`, `#3`... and a note.

Runs whose labels are equal once the seed is removed form one group (`--group-by label`); with
`--group-by strategy` all runs of one strategy on one base model do, whatever their arguments.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ilora_eval.errors import IloraError

from .results import Run

SEED_KEYS = ("seed", "adapt_seed")
# model_args that change how a run is executed, not what it computes
OPERATIONAL = {"device", "batch_size", "max_batch_size", "parallelize", "device_map", "routing_log", "fit_cache",
               "include_path", "trust_remote_code", "progress", "check_base"}
GROUP_BY = ("label", "strategy")

_SEED_ITEM = re.compile(r"(?<=[(,])\s*(?:adapt_)?seed=[^,()]*\s*(?:,|(?=\)))")
_SEED_SUFFIX = re.compile(r"[ _-]seed[ _=-]?\d+$")


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def adapt_seeds(self) -> list[Any]:
        return [r.adapt_seed for r in self.runs]

    def seeds_text(self) -> str:
        text = ",".join(_fmt_value(s) or "-" for s in self.seeds)
        if any(s is not None for s in self.adapt_seeds):
            text += " (adapt_seed " + ",".join(_fmt_value(s) or "-" for s in self.adapt_seeds) + ")"
        return text


def _short_name(name: Any) -> str:
    return str(name).rstrip("/").split("/")[-1] or str(name)


def _fmt_value(v: Any) -> str | None:
    if v is None or isinstance(v, dict):
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        parts = [p for p in (_fmt_value(x) for x in v) if p is not None]
        return "+".join(parts)
    return str(v)


def _fmt_args(items: dict[str, str]) -> str:
    parts = [f"{k}={items[k]}" for k in sorted(items) if items[k] is not None]
    return f"({','.join(parts)})" if parts else ""


def _same(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


@dataclass
class _Config:
    """What a label is made of: a family (runs compared argument by argument), the label's head and
    base model, every setting as key -> (value to compare, text to show), and the keys always shown."""

    family: tuple
    head: str
    base: str | None
    items: dict[str, tuple[Any, str | None]]
    explicit: set[str]


def _config(run: Run) -> _Config:
    cfg, margs = run.config, run.model_args
    model = "ilora" if run.is_ilora else str(cfg.get("model") or run.data.get("model_source") or "model")
    base = margs.get("pretrained") or margs.get("model") or margs.get("path") or run.data.get("model_name")
    if base is None and run.is_ilora and cfg.get("model") not in (None, "ilora"):
        base = cfg.get("model")  # a model object handed to simple_evaluate records its path here
    base = _short_name(base) if base else None
    items: dict[str, tuple[Any, str | None]] = {}
    explicit: set[str] = set()
    if run.is_ilora:
        strategy = run.strategy
        args = cfg.get("ilora_args") if isinstance(cfg.get("ilora_args"), dict) else {}
        if not args:
            args = {k: v for k, v in margs.items() if k not in ("pretrained", "strategy", "library", *OPERATIONAL)}
        for k, v in args.items():
            items[k] = (v, _fmt_value(v))
        explicit = {k for k in args if k in margs}
        library = cfg.get("ilora_library") or margs.get("library")
        if library is not None or cfg.get("ilora_library_hash"):
            items["library"] = (cfg.get("ilora_library_hash") or library, _short_name(library) if library else None)
        for key in ("composition", "exclude", "embedder"):
            if f"ilora_{key}" in cfg:
                items.setdefault(key, (cfg[f"ilora_{key}"], _fmt_value(cfg[f"ilora_{key}"])))
        skip = {"pretrained", "strategy", "library", *OPERATIONAL, *args}
        family: tuple = ("ilora", strategy, base)
        head = f"ilora:{strategy}"
    else:
        peft = _short_name(margs["peft"]) if margs.get("peft") else None
        skip = {"pretrained", "model", "path", "peft", *OPERATIONAL}
        family = (model, base, peft)
        head = f"{model}{_fmt_args({'peft': peft} if peft else {})}"
    for k, v in margs.items():
        if k not in skip:
            items.setdefault(k, (v, _fmt_value(v)))
    if cfg.get("limit") is not None:
        items["limit"] = (cfg["limit"], _fmt_value(cfg["limit"]))
    if not run.is_ilora and run.seed is not None:
        items["seed"] = (run.seed, _fmt_value(run.seed))
    if run.adapt_seed is not None:
        items["adapt_seed"] = (run.adapt_seed, _fmt_value(run.adapt_seed))
    return _Config(family, head, base, items, explicit)


def _label(c: _Config, shown: set[str], drop: tuple[str, ...] = ()) -> str:
    items = {k: c.items[k][1] for k in shown if k in c.items and k not in drop}
    head = f"{c.head}{_fmt_args(items)}"
    return f"{head}@{c.base}" if c.base else head


def _shown_keys(configs: list[_Config]) -> list[set[str]]:
    """Per run: its explicit keys plus the keys whose values differ within its family."""
    families: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        families.setdefault(c.family, []).append(i)
    shown: list[set[str]] = [set() for _ in configs]
    for members in families.values():
        keys = {k for i in members for k in configs[i].items}
        differ = {k for k in keys
                  if len({_same(configs[i].items[k][0]) if k in configs[i].items else "<absent>" for i in members}) > 1}
        # show a differing setting by value when its short text does not tell the runs apart
        for k in differ:
            texts = {}
            for i in members:
                if k in configs[i].items:
                    value, text = configs[i].items[k]
                    texts.setdefault(text, set()).add(_same(value))
            if any(len(vs) > 1 for vs in texts.values()):
                for i in members:
                    if k in configs[i].items:
                        value, _ = configs[i].items[k]
                        text = _same(value) if isinstance(value, dict) else _fmt_value(value)
                        configs[i].items[k] = (value, text)
        for i in members:
            shown[i] = (configs[i].explicit | differ) & set(configs[i].items)
    return shown


def strip_seed(label: str) -> str:
    """The label without its seed: `x(seed=1,top_k=3)@m` -> `x(top_k=3)@m`, `lorahub_seed2` -> `lorahub`."""
    out = _SEED_ITEM.sub("", label).replace(",)", ")").replace("()", "")
    return _SEED_SUFFIX.sub("", out)


def assign_labels(runs: list[Run], overrides: list[str] | None, group_by: str = "label") -> list[str]:
    """Sets run.label and run.group; returns notes (duplicate configurations)."""
    if group_by not in GROUP_BY:
        raise IloraError(f"--group-by {group_by!r} is unknown; use one of: {', '.join(GROUP_BY)}")
    overrides = list(overrides or [])
    if len(overrides) > len(runs):
        raise IloraError(
            f"{len(overrides)} --label values for {len(runs)} runs; give at most one --label per run, in input order"
        )
    seen = set()
    for name in overrides:
        if name in seen:
            raise IloraError(f"--label {name!r} given twice; labels must be unique")
        seen.add(name)
    configs = [_config(r) for r in runs]
    shown = _shown_keys(configs)
    taken: set[str] = set(overrides)
    first_of: dict[str, Run] = {}
    notes = []
    for i, (run, c) in enumerate(zip(runs, configs)):
        if i < len(overrides):
            run.label = overrides[i]
            run.group = strip_seed(run.label)
            continue
        name = _label(c, shown[i])
        label, k = name, 1
        while label in taken:
            k += 1
            label = f"{name}#{k}"
        taken.add(label)
        run.label = label
        run.group = _label(c, shown[i], SEED_KEYS) + (f"#{k}" if k > 1 else "")
        if k > 1:
            notes.append(f"{label} has the same configuration and seed as {first_of[name].label} "
                         f"({run.path} and {first_of[name].path}); kept apart")
        first_of.setdefault(name, run)
    if group_by == "strategy":
        for run, c in zip(runs, configs):
            if run.is_ilora:
                run.group = f"{c.head}@{c.base}" if c.base else c.head
    return notes


def make_groups(runs: list[Run], group_by: str = "label") -> list[Group]:
    """Groups in order of their first run; in label mode two runs of one group may not share a seed."""
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(run.group, Group(run.group)).runs.append(run)
    if group_by == "label":
        for g in groups.values():
            seen: dict[str, Run] = {}
            for r in g.runs:
                key = _same([r.seed, r.adapt_seed])
                if key in seen:
                    raise IloraError(
                        f"runs {seen[key].label!r} and {r.label!r} form group {g.label!r} but have the same seed "
                        f"({_fmt_value(r.seed)}); give them --label values that differ by more than the seed, "
                        "or drop one"
                    )
                seen[key] = r
    return list(groups.values())


def _run_baseline(g: Group, name: str, run_label: str | None) -> tuple[Group, str | None]:
    if len(g.runs) == 1:
        return g, None
    which = f"run {run_label}" if run_label else "runs"
    return g, (f"--baseline {name!r} names {which} of group {g.label}: compared against the group's seed mean "
               f"({len(g.runs)} runs)")


def resolve_baseline(name: str, groups: list[Group]) -> tuple[Group, str | None]:
    """--baseline as a group or run label, exact or a unique part of one; returns (group, note)."""
    by_label = {g.label: g for g in groups}
    run_group = {r.label: g for g in groups for r in g.runs}
    if name in by_label:
        return by_label[name], None
    if name in run_group:
        return _run_baseline(run_group[name], name, name)
    hits = [g for g in groups if name in g.label]
    if len(hits) == 1:
        return hits[0], None
    if not hits:
        runs = [r.label for g in groups for r in g.runs if name in r.label]
        hits = list({id(run_group[lb]): run_group[lb] for lb in runs}.values())
        if len(hits) == 1:
            return _run_baseline(hits[0], name, runs[0] if len(runs) == 1 else None)
    what = "matches several runs" if hits else "matches no run"
    raise IloraError(f"--baseline {name!r} {what}; use one of: {', '.join(g.label for g in groups)}")
