"""A LoRA library: PEFT LoRA adapters on one base model, validated and stacked per module.

Layout accepted by `LoraLibrary.open(spec)`:
- a directory whose subdirectories are PEFT adapters (`adapter_config.json` + weights), each
  optionally with `texts.jsonl` (`{"text": ...}` per line, a sample of its training data);
- a manifest file (`.json`: `{"adapters": [{"id": ..., "path": ..., "texts": ...}, ...]}` or a
  list of such entries / strings; `.txt`: one Hub id or path per line) naming local paths or
  Hub ids (resolved through the Hub cache, so offline runs need them downloaded beforehand).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ilora_eval.adapter_files import (CONFIG_NAME, INDEX_DIR, TEXTS_NAME, WEIGHT_NAMES, _KEY,  # noqa: F401 (re-exported)
                                      AdapterEntry, read_config, read_texts)
from ilora_eval.errors import IloraError



@dataclass
class AdapterSpec:
    """What every adapter of one library must share."""

    base_model: str
    rank: int
    target_modules: tuple[str, ...]
    modules: tuple[str, ...]  # module paths (relative to the transformers model) carrying LoRA weights

    def describe(self) -> str:
        return f"base={self.base_model!r} r={self.rank} target_modules={list(self.target_modules)}"


class StackedModule:
    """One target module's library: A [N, r, d_in] and B·scaling [N, d_out, r].

    Opened libraries keep these on the host, in the adapters' memory-mapped files: `rows(indices)`
    reads only those adapters (what the composition layer puts on the device), `A`/`B` read the
    whole stack (export, tools, tests: N adapters' worth of memory per access)."""

    def __init__(self, A: torch.Tensor | None = None, B: torch.Tensor | None = None, *, host=None,
                 module: str | None = None, shape_A: tuple[int, int] | None = None, shape_B: tuple[int, int] | None = None):
        self._A, self._B = A, B
        self.host, self.module = host, module
        self.shape_A = tuple(A.shape[1:]) if A is not None else tuple(shape_A)  # (r, d_in)
        self.shape_B = tuple(B.shape[1:]) if B is not None else tuple(shape_B)  # (d_out, r)
        self.n = A.shape[0] if A is not None else len(host)

    @property
    def dtype(self) -> torch.dtype:
        return self._A.dtype if self._A is not None else self.host.dtype

    def rows(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """A [k, r, d_in] and B·scaling [k, d_out, r] of adapters `indices` (library order)."""
        if self._A is not None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            return self._A.index_select(0, idx), self._B.index_select(0, idx)
        return self.host.rows(self.module, indices, self.shape_A, self.shape_B)

    @property
    def A(self) -> torch.Tensor:
        return self._A if self._A is not None else self.rows(range(self.n))[0]

    @property
    def B(self) -> torch.Tensor:
        return self._B if self._B is not None else self.rows(range(self.n))[1]


@dataclass
class LoraLibrary:
    entries: list[AdapterEntry]
    spec: AdapterSpec
    modules: dict[str, StackedModule]
    digests: dict[str, str]  # adapter id -> sha256 of its config, weights and texts
    index_dir: Path
    texts: dict[str, list[str]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)  # ids exclude= removed, for the record

    @property
    def content_hash(self) -> str:
        """Covers the adapters' ORDER as well as their content: a fit stores library positions
        and LoraHub draws its modules over the listed order, so a reordered manifest is another
        library (another fit-cache key, output folder and --use_cache stamp)."""
        h = hashlib.sha256()
        for entry in self.entries:
            h.update(f"{entry.name}={self.digests[entry.name]};".encode())
        return h.hexdigest()[:16]

    @property
    def ids(self) -> list[str]:
        return [e.name for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------ loading
    @classmethod
    def open(cls, spec: str | os.PathLike, *, exclude: str | None = None, check_base: str | None = None,
             dtype: torch.dtype = torch.float32, progress: bool = True) -> "LoraLibrary":
        """Validates every adapter (digests cached per weight file: a reopen reads no weight file
        that did not change) and keeps the weights on the host, memory-mapped, read per adapter
        when the composition layer first needs it (`ilora_eval.library_store`)."""
        from ilora_eval.library_store import HostWeights, LazyTexts, scan_library, with_sampled_texts

        listed, index_dir = discover(spec)
        entries = apply_exclude(listed, exclude)
        if not entries:
            raise IloraError(f"library {spec} holds no adapters after exclude={exclude!r}; loosen the exclude pattern")
        entries = with_sampled_texts(entries, index_dir)
        scans = scan_library(entries, index_dir, progress=progress)
        configs = [s.config for s in scans]
        # the checks depend on an adapter's config and tensor table only: check one adapter of each
        # distinct pair, in library order (the same first error, thousands of times fewer checks)
        groups: dict[tuple[str, str], int] = {}
        for i, s in enumerate(scans):
            groups.setdefault((s.config_key, s.table_key), i)
        reps = list(groups.values())
        spec_ = check_compatible([entries[i] for i in reps], [configs[i] for i in reps], [scans[i].meta_weights() for i in reps])
        if check_base is not None:
            _check_base(spec_, check_base)
        table_keys: dict[str, dict[str, tuple[str, str]]] = {}
        for s in scans:
            if s.table_key not in table_keys:
                named = {}
                for key in s.tensors:
                    m = _KEY.match(key)
                    if m:
                        named.setdefault(m["module"], ["", ""])["AB".index(m["which"])] = key
                table_keys[s.table_key] = {mod: tuple(ab) for mod, ab in named.items()}
        keys = [table_keys[s.table_key] for s in scans]
        for module in spec_.modules:
            bad = [e.name for e, s, k in zip(entries, scans, keys) if s.nonfinite and set(k[module]) & set(s.nonfinite)]
            if bad:
                raise IloraError(f"adapter(s) {bad} hold non-finite weights in {module}; re-train or remove them")
        host = HostWeights([e.name for e in entries], scans, keys, [scaling(c) for c in configs], dtype)
        first = scans[0].tensors
        modules = {}
        for module in spec_.modules:
            a_key, b_key = keys[0][module]
            modules[module] = StackedModule(host=host, module=module, shape_A=tuple(first[a_key][1]),
                                            shape_B=tuple(first[b_key][1]))
        digests = {e.name: s.digest for e, s in zip(entries, scans)}
        kept = {e.name for e in entries}
        return cls(entries, spec_, modules, digests, index_dir, LazyTexts(entries),
                   excluded=[e.name for e in listed if e.name not in kept])


def discover(spec: str | os.PathLike) -> tuple[list[AdapterEntry], Path]:
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        subdirs = sorted(p for p in path.iterdir() if p.is_dir() and (p / CONFIG_NAME).is_file())
        if not subdirs:
            if (path / CONFIG_NAME).is_file():
                raise IloraError(f"library {path} is a single adapter; put each adapter in its own subdirectory of the library folder")
            raise IloraError(f"library {path} holds no adapters (no subdirectory with {CONFIG_NAME}); point library= to a folder of PEFT LoRA adapters or a manifest")
        return [AdapterEntry(p.name, p, _texts(p)) for p in subdirs], path / INDEX_DIR
    if path.is_file():
        return read_manifest(path), path.with_name(path.name + ".index")
    raise IloraError(f"library {path} does not exist; pass library=<folder of PEFT adapters> or library=<manifest.json|.txt>")


def read_manifest(path: Path) -> list[AdapterEntry]:
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise IloraError(f"library manifest {path} is not valid JSON ({err.msg} at line {err.lineno}); fix the file") from None
        items = data.get("adapters") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise IloraError(f"library manifest {path} must hold a list of adapters or {{\"adapters\": [...]}}")
    else:
        items = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    entries = []
    for item in items:
        if isinstance(item, str):
            is_path = (Path(os.path.expanduser(item)) / CONFIG_NAME).is_file() or (path.parent / item / CONFIG_NAME).is_file()
            item = {"path": item} if is_path else {"id": item}
        if "id" not in item and "path" not in item:
            raise IloraError(f"library manifest {path}: entry {item} has neither 'id' nor 'path'")
        ref = item.get("path") or item["id"]
        local = resolve_adapter(ref, base=path.parent)
        name = item.get("id") or local.name
        texts = item.get("texts")
        texts_path = (path.parent / texts) if texts else _texts(local)
        entries.append(AdapterEntry(name, local, texts_path))
    if not entries:
        raise IloraError(f"library manifest {path} lists no adapters")
    _check_unique(path, entries)
    return entries


def _check_unique(path: Path, entries: list[AdapterEntry]) -> None:
    """One adapter listed twice would weigh double under uniform and share one id in every
    record; refuse it rather than guess which listing was meant."""
    seen_names: dict[str, int] = {}
    seen_paths: dict[Path, str] = {}
    for i, e in enumerate(entries, 1):
        if e.name in seen_names:
            raise IloraError(f"library manifest {path} lists adapter id {e.name!r} twice (entries {seen_names[e.name]} "
                             f"and {i}); list each adapter once, with distinct ids")
        seen_names[e.name] = i
        where = e.path.resolve()
        if where in seen_paths:
            raise IloraError(f"library manifest {path} lists the adapter at {e.path} twice (as {seen_paths[where]!r} "
                             f"and {e.name!r}); list each adapter once")
        seen_paths[where] = e.name


def resolve_adapter(ref: str, base: Path) -> Path:
    for cand in (Path(os.path.expanduser(ref)), base / ref):
        if (cand / CONFIG_NAME).is_file():
            return cand
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(ref, allow_patterns=[CONFIG_NAME, *WEIGHT_NAMES]))
        except Exception as err:  # network, auth or offline cache miss
            raise IloraError(f"adapter {ref!r} could not be fetched from the Hub ({type(err).__name__}); download it or list a local path instead") from None
    raise IloraError(f"adapter {ref!r} not found (no {CONFIG_NAME}); fix the path in the library manifest")


def _texts(p: Path) -> Path | None:
    return p / TEXTS_NAME if (p / TEXTS_NAME).is_file() else None


def apply_exclude(entries: list[AdapterEntry], exclude: str | None) -> list[AdapterEntry]:
    """`exclude` is a `|`-separated list of adapter ids or one regular expression (full match).
    Every id, and every `|` alternative of a regex, must match an adapter: a typo would otherwise
    leave the held-out adapter in the library without a word."""
    if not exclude:
        return entries
    names = [e.name for e in entries]
    parts = [p for p in exclude.split("|") if p]
    if parts and all(p in names for p in parts):
        return [e for e in entries if e.name not in parts]
    try:
        pattern = re.compile(exclude)
    except re.error as err:
        raise IloraError(f"exclude={exclude!r} is neither adapter ids nor a valid regex ({err}); fix the pattern") from None
    kept = [e for e in entries if not pattern.fullmatch(e.name)]
    unmatched = [p for p in parts if not _matches_any(p, names)]
    if len(kept) == len(entries) or unmatched:
        _refuse_unmatched(exclude, unmatched or [exclude], names)
    return kept


def _matches_any(part: str, names: list[str]) -> bool:
    """Whether one `|` alternative matches an adapter id; an alternative that is no regex on its
    own (a group spanning `|`, as in `(a|b)_x`) is judged only with the whole pattern."""
    try:
        alt = re.compile(part)
    except re.error:
        return True
    return any(alt.fullmatch(n) for n in names)


def _refuse_unmatched(exclude: str, unmatched: list[str], names: list[str]) -> None:
    import difflib

    hints = sorted({c for u in unmatched for c in difflib.get_close_matches(u, names, n=2, cutoff=0.6)})
    hint = f"did you mean {' or '.join(map(repr, hints))}? " if hints else ""
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    raise IloraError(f"exclude={exclude!r}: {', '.join(map(repr, unmatched))} matches no adapter id of the library; "
                     f"{hint}ids are full matches of the adapters' folder names or manifest ids: {shown}")


def read_weights(entry: AdapterEntry) -> tuple[dict[str, torch.Tensor], bytes]:
    for name in WEIGHT_NAMES:
        f = entry.path / name
        if f.is_file():
            raw = f.read_bytes()
            try:
                if name.endswith(".safetensors"):
                    from safetensors.torch import load as load_safetensors

                    return load_safetensors(raw), raw
                import io

                return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True), raw
            except Exception as err:
                raise IloraError(f"adapter {entry.name}: {name} is corrupt or truncated ({type(err).__name__}); re-download or re-save it") from None
    raise IloraError(f"adapter {entry.name} at {entry.path} has no weights ({' or '.join(WEIGHT_NAMES)}); re-save it with save_pretrained")


def lora_modules(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        m = _KEY.match(key)
        if m:
            out.setdefault(m["module"], {})[m["which"]] = tensor
    return out


def check_compatible(entries, configs, weights) -> AdapterSpec:
    specs = []
    for entry, cfg, w in zip(entries, configs, weights):
        mods = lora_modules(w)
        if not mods or any(set(v) != {"A", "B"} for v in mods.values()):
            raise IloraError(f"adapter {entry.name}: weights hold no complete lora_A/lora_B pairs; is it a LoRA adapter?")
        ranks = {v["A"].shape[0] for v in mods.values()}
        targets = cfg.get("target_modules") or []
        targets = tuple(sorted(targets)) if isinstance(targets, list) else (str(targets),)
        specs.append(AdapterSpec(str(cfg.get("base_model_name_or_path") or ""), int(cfg.get("r", max(ranks))),
                                 targets, tuple(sorted(mods))))
        if len(ranks) != 1 or specs[-1].rank not in ranks:
            raise IloraError(f"adapter {entry.name}: rank_pattern/mixed ranks {sorted(ranks)} are not supported; all modules must have rank r")
    ref = specs[0]
    for entry, s in zip(entries[1:], specs[1:]):
        for what in ("base_model", "rank", "target_modules", "modules"):
            if getattr(s, what) != getattr(ref, what):
                raise IloraError(f"adapter {entry.name} does not match the library ({what}: {_short(getattr(s, what))} vs "
                                 f"{_short(getattr(ref, what))} of {entries[0].name}); remove it or exclude it with exclude=")
    return ref


def _short(v) -> str:
    s = repr(list(v) if isinstance(v, tuple) else v)
    return s if len(s) < 80 else s[:77] + "..."


def _check_base(spec: AdapterSpec, pretrained: str) -> None:
    def norm(s):
        return s.rstrip("/").split("/")[-1].lower()

    if spec.base_model and norm(spec.base_model) != norm(pretrained):
        raise IloraError(f"library adapters were trained on {spec.base_model!r} but pretrained={pretrained!r}; "
                         "use the matching base model, or pass check_base=false if the names differ but the model is the same")


def scaling(cfg: dict) -> float:
    r, alpha = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    return alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r


def stack(entries, configs, weights, spec: AdapterSpec, dtype) -> dict[str, StackedModule]:
    """Scaling is folded into B so adapters with different alpha compose exactly as LoraHub's
    A=Σw·A, B=Σw·B would with one shared scale."""
    per = [lora_modules(w) for w in weights]
    out = {}
    for module in spec.modules:
        A = torch.stack([p[module]["A"].to(torch.float32) for p in per])
        B = torch.stack([p[module]["B"].to(torch.float32) * scaling(c) for p, c in zip(per, configs)])
        if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
            bad = [e.name for e, p in zip(entries, per) if not (torch.isfinite(p[module]["A"]).all() and torch.isfinite(p[module]["B"]).all())]
            raise IloraError(f"adapter(s) {bad} hold non-finite weights in {module}; re-train or remove them")
        out[module] = StackedModule(A.to(dtype), B.to(dtype))
    return out
