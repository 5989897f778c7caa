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

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
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
    items.update(prompt_items(run))
    if not run.is_ilora and run.seed is not None:
        items["seed"] = (run.seed, _fmt_value(run.seed))
    if run.adapt_seed is not None:
        items["adapt_seed"] = (run.adapt_seed, _fmt_value(run.adapt_seed))
    return _Config(family, head, base, items, explicit)


def _short_hash(data: dict, key: str) -> str | None:
    """lm-eval's sha of a recorded prompt text (`<key>_sha`), else a hash of the text itself."""
    sha = data.get(f"{key}_sha")
    text = data.get(key)
    if not sha and isinstance(text, str) and text:
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return str(sha)[:8] if sha else None


def _gen_kwargs(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        from ilora_eval.run_files import parse_model_args  # lm-eval's own k=v parser

        return parse_model_args(value)
    return value or None


def prompt_items(run: Run) -> dict[str, tuple[Any, str | None]]:
    """The prompt and decoding settings lm-eval 0.4.13 records in a results JSON: `n-shot` per task
    (--num_fewshot or the task's own), `config.gen_kwargs`, and from its EvaluationTracker the
    top-level `chat_template(_sha)` (set only with --apply_chat_template), `system_instruction(_sha)`
    and `fewshot_as_multiturn` (it only changes prompts under a chat template)."""
    data, items = run.data, {}
    shots = data.get("n-shot") if isinstance(data.get("n-shot"), dict) else {}
    shots = {t: n for t, n in shots.items() if t in run.metrics}
    if shots:
        values = set(map(_same, shots.values()))
        value = next(iter(shots.values())) if len(values) == 1 else dict(sorted(shots.items()))
        items["num_fewshot"] = (value, _fmt_value(value) if len(values) == 1 else None)
    gen = _gen_kwargs(run.config.get("gen_kwargs"))
    if gen:
        text = "+".join(f"{k}:{_fmt_value(v)}" for k, v in sorted(gen.items())) if isinstance(gen, dict) else str(gen)
        items["gen_kwargs"] = (gen, text)
    template = _short_hash(data, "chat_template")
    if template:
        items["chat_template"] = (template, template)
        multiturn = data.get("fewshot_as_multiturn")
        if multiturn is not None:
            items["fewshot_as_multiturn"] = (bool(multiturn), _fmt_value(bool(multiturn)))
    system = _short_hash(data, "system_instruction")
    if system:
        items["system_instruction"] = (system, system)
    return items


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
    for run, c in zip(runs, configs):
        run.settings = {k: v for k, v in c.items.items() if k not in SEED_KEYS}
        run.family = c.family
    if group_by == "strategy":
        for run, c in zip(runs, configs):
            if run.is_ilora:
                run.group = f"{c.head}@{c.base}" if c.base else c.head
        merged = _differences([r for r in runs if r.is_ilora])
        if merged:
            notes.append("--group-by strategy merges runs whose settings differ: " + "; ".join(merged))
    else:
        _check_override_groups(runs[: len(overrides)])
    return notes


def _differences(runs: list[Run]) -> list[str]:
    """`setting: value1 / value2` for each setting (besides the seed) whose value differs between runs."""
    keys = dict.fromkeys(k for r in runs for k in r.settings)
    out = []
    if len({_same(r.family) for r in runs}) > 1:
        out.append("model or strategy: " + " / ".join(dict.fromkeys(_family_text(r.family) for r in runs)))
    for k in keys:
        values = {_same(r.settings[k][0]) if k in r.settings else "<absent>": r for r in runs}
        if len(values) > 1:
            texts = dict.fromkeys(_setting_text(r, k) for r in values.values())
            out.append(f"{k}: " + " / ".join(texts))
    return out


def _family_text(family: tuple) -> str:
    """("ilora", strategy, base) -> `ilora:strategy@base`; (model, base, peft) -> `model(peft=p)@base`."""
    if len(family) == 3 and family[0] == "ilora":
        return f"ilora:{family[1]}" + (f"@{family[2]}" if family[2] else "")
    if len(family) == 3:
        model, base, peft = family
        return f"{model}" + (f"(peft={peft})" if peft else "") + (f"@{base}" if base else "")
    return "/".join(str(x) for x in family)


def _setting_text(run: Run, key: str) -> str:
    if key not in run.settings:
        return "(not set)"
    value, text = run.settings[key]
    return text if text is not None else _same(value)


def _check_override_groups(runs: list[Run]) -> None:
    """--label values that put runs into one group must name runs that differ only by seed."""
    by_group: dict[str, list[Run]] = {}
    for run in runs:
        by_group.setdefault(run.group, []).append(run)
    for group, members in by_group.items():
        diff = _differences(members)
        if diff:
            raise IloraError(
                f"--label values put {', '.join(r.label for r in members)} into one group {group!r}, but the runs "
                f"differ by more than the seed ({'; '.join(diff)}); give them labels that differ once the seed is "
                "removed"
            )


def separating_settings(groups: list[Group]) -> list[str]:
    """Which settings tell the groups apart, as `setting: value / value`: the model, strategy and
    base model between families, and within one family every other setting that differs."""
    firsts = [g.runs[0] for g in groups]
    families: dict[str, list[Run]] = {}
    for r in firsts:
        families.setdefault(_same(r.family), []).append(r)
    out = [d for d in _differences(firsts) if d.startswith("model or strategy")] if len(families) > 1 else []
    for members in families.values():
        for d in _differences(members):
            if d not in out:
                out.append(d)
    return out


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


def _baseline_by_path(name: str, groups: list[Group]) -> tuple[Group, str | None] | None:
    """--baseline naming a results file or folder given as input: the group of the run(s) it holds."""
    path = Path(name)
    if not path.exists():
        return None
    target = path.resolve()
    runs = [(r, g) for g in groups for r in g.runs
            if r.path.resolve() == target or (path.is_dir() and target in r.path.resolve().parents)]
    found = list({id(g): g for _, g in runs}.values())
    if len(found) == 1:
        return _run_baseline(found[0], name, runs[0][0].label if len(runs) == 1 else None)
    if not found:
        return None  # a path that holds no compared run: read the name as a label
    raise IloraError(f"--baseline {name!r} holds runs of {len(found)} groups ({', '.join(g.label for g in found)}); "
                     "pass one results file or a group label")


def resolve_baseline(name: str, groups: list[Group]) -> tuple[Group, str | None]:
    """--baseline as a group or run label, exact or a unique part of one; returns (group, note)."""
    by_label = {g.label: g for g in groups}
    run_group = {r.label: g for g in groups for r in g.runs}
    by_path = _baseline_by_path(name, groups)
    if by_path is not None:
        return by_path
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
