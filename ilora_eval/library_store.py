"""The host side of a LoRA library at scale.

Opening a library of thousands of adapters must not read (or hold) thousands of weight files:

- `scan_library` validates every adapter and computes its content digest. What it learns from a
  weight file (its sha256, tensor names, shapes and dtypes, which tensors hold NaN/inf) is cached
  per file, keyed by its path, size, mtime, ctime and inode, in `$ILORA_EVAL_CACHE/library-digests`
  (else `~/.cache/ilora-eval/library-digests`): a reopen reads no weight file that did not change.
  Cold scans run in a few threads (hashing, parsing and the finiteness check release the GIL).
- `HostWeights` keeps no weights in memory: an adapter's tensors are read, when the composition
  layer first needs them on the device, from its memory-mapped file (safetensors `safe_open`;
  `torch.load(mmap=True)` for `.bin`), with the scaling folded into B exactly as the old in-memory
  stack did (float32 then the library dtype), so the values on the device are the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ilora_eval.errors import IloraError

CACHE_VERSION = 2
# cold scans: threads pay when hashing and parsing dominate (files of MBs); two is the floor so a
# 2-core machine overlaps reading one file with hashing the other
SCAN_WORKERS = max(2, min(8, os.cpu_count() or 2))


# ------------------------------------------------------------------ the digest cache
def cache_dir() -> Path:
    root = os.environ.get("ILORA_EVAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ilora-eval")
    return Path(root) / "library-digests"


def _stat_key(st: os.stat_result) -> list[int]:
    # ctime and inode too: `cp -p`/rsync keep mtime but not ctime, `mv new old` changes the inode
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class DigestCache:
    """What the scan learned per file (weights: digest, tensor table, non-finite tensors; texts: digest),
    valid while the file's stat key is unchanged. One JSON file per library (its index folder)."""

    def __init__(self, index_dir: Path):
        ident = hashlib.sha256(str(Path(index_dir).resolve()).encode()).hexdigest()[:20]
        self.path = cache_dir() / f"{ident}.json"
        self.files: dict[str, dict] = {}
        # values many files share (tensor tables, configs), stored once: a library of thousands of
        # adapters of one recipe has one of each, so the cache stays small and loads fast
        self.shared: dict[str, object] = {}
        self.used: set[str] = set()
        self.changed = False
        try:
            data = json.loads(self.path.read_text())
            if (data.get("version") == CACHE_VERSION and isinstance(data.get("files"), dict)
                    and isinstance(data.get("shared"), dict)):
                self.files, self.shared = data["files"], data["shared"]
        except (OSError, ValueError, AttributeError):
            pass  # no cache (or an unreadable one): every file is scanned, which is only slower

    def intern(self, value) -> str:
        key = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:24]
        if key not in self.shared:
            self.shared[key] = value
        return key

    def get(self, path: Path, st: os.stat_result) -> dict | None:
        key = str(path)
        self.used.add(key)
        hit = self.files.get(key)
        return hit if hit is not None and hit.get("stat") == _stat_key(st) else None

    def put(self, path: Path, st: os.stat_result, info: dict) -> None:
        self.files[str(path)] = {**info, "stat": _stat_key(st)}
        self.used.add(str(path))
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        from ilora_eval.util import write_atomic

        # files of adapters this open did not use stay cached (another exclude= wants them next),
        # files that no longer exist go
        keep = {k: v for k, v in self.files.items() if k in self.used or os.path.exists(k)}
        refs = {v[f] for v in keep.values() for f in ("table", "config") if f in v}
        shared = {k: v for k, v in self.shared.items() if k in refs}
        try:
            write_atomic(self.path, json.dumps({"version": CACHE_VERSION, "files": keep, "shared": shared},
                                               separators=(",", ":")))
        except OSError:
            pass  # a read-only cache folder costs the next open a full scan, never a wrong digest


# ------------------------------------------------------------------ scanning
@dataclass
class AdapterScan:
    config: dict
    weight_file: Path
    weight_stat: os.stat_result
    tensors: dict[str, tuple[str, list[int]]]  # name -> (dtype, shape)
    nonfinite: list[str]  # tensor names holding NaN or inf
    digest: str
    config_key: str = ""  # adapters with equal keys have equal configs / tensor tables
    table_key: str = ""

    def meta_weights(self) -> dict[str, "_Meta"]:
        """Shape-only stand-ins of the tensors for the compatibility checks (no memory, no file read)."""
        return {k: _Meta(tuple(shape), dt) for k, (dt, shape) in self.tensors.items()}


class _Meta:
    __slots__ = ("shape", "dtype_name")

    def __init__(self, shape: tuple[int, ...], dtype_name: str):
        self.shape, self.dtype_name = shape, dtype_name


def _weight_file(entry) -> tuple[str, os.stat_result]:
    from ilora_eval.adapter_files import WEIGHT_NAMES

    folder = str(entry.path)
    for name in WEIGHT_NAMES:
        f = os.path.join(folder, name)
        try:
            st = os.stat(f)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            return f, st
    raise IloraError(f"adapter {entry.name} at {entry.path} has no weights ({' or '.join(WEIGHT_NAMES)}); re-save it with save_pretrained")


def _parse(entry, f: Path, raw: bytes) -> dict[str, torch.Tensor]:
    try:
        if f.name.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            return load_safetensors(raw)
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:
        raise IloraError(f"adapter {entry.name}: {f.name} is corrupt or truncated ({type(err).__name__}); re-download or re-save it") from None


def scan_weight_file(entry, f) -> dict:
    """One full read of a weight file: its sha256, tensor table and non-finite LoRA tensors."""
    from ilora_eval.adapter_files import _KEY

    f = Path(f)
    raw = f.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    weights = _parse(entry, f, raw)
    del raw
    tensors, nonfinite = {}, []
    for k, t in weights.items():
        if not isinstance(t, torch.Tensor):
            continue
        tensors[k] = [str(t.dtype), list(t.shape)]
        if _KEY.match(k) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            nonfinite.append(k)
    return {"sha256": sha, "tensors": tensors, "nonfinite": nonfinite}


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_adapter(entry, cache: DigestCache) -> AdapterScan:
    from ilora_eval.adapter_files import CONFIG_NAME, read_config

    # plain strings and os.stat: a warm open is a few stat calls per adapter, pathlib would dominate
    cfg_path = os.path.join(str(entry.path), CONFIG_NAME)
    try:
        cst = os.stat(cfg_path)
    except OSError:
        cst = None
    cinfo = cache.get(cfg_path, cst) if cst is not None else None
    if cinfo is None:  # read and validated once per version of the file
        cfg, cfg_bytes = read_config(entry)
        cinfo = {"sha256": hashlib.sha256(cfg_bytes).hexdigest(), "config": cache.intern(cfg)}
        if cst is not None:
            cache.put(cfg_path, cst, cinfo)
    f, st = _weight_file(entry)
    info = cache.get(f, st)
    if info is None:
        scanned = scan_weight_file(entry, f)
        info = {"sha256": scanned["sha256"], "table": cache.intern(scanned["tensors"]), "nonfinite": scanned["nonfinite"]}
        cache.put(f, st, info)
    # the digest as the library always computed it: sha(sha(config) + sha(weights)) [+ sha(texts)]
    h = hashlib.sha256(bytes.fromhex(cinfo["sha256"]) + bytes.fromhex(info["sha256"]))
    if entry.texts_path is not None:
        tpath = str(entry.texts_path)
        tst = os.stat(tpath)
        tinfo = cache.get(tpath, tst)
        if tinfo is None:
            tinfo = {"sha256": _file_sha(entry.texts_path)}
            cache.put(tpath, tst, tinfo)
        h.update(bytes.fromhex(tinfo["sha256"]))
    return AdapterScan(cache.shared[cinfo["config"]], Path(f), st, cache.shared[info["table"]], info["nonfinite"],
                       h.hexdigest(), cinfo["config"], info["table"])


def scan_library(entries, index_dir: Path, *, progress: bool = True) -> list[AdapterScan]:
    """Every adapter scanned (from the digest cache where its files did not change), in order;
    the first bad adapter in library order raises its one-line error."""
    from tqdm.auto import tqdm

    cache = DigestCache(index_dir)
    bar = tqdm(total=len(entries), desc="Opening LoRA library", unit="adapter",
               disable=not progress or len(entries) < 100)
    results: list[AdapterScan | BaseException | None] = [None] * len(entries)

    def one(i):
        try:
            results[i] = scan_adapter(entries[i], cache)
        except (IloraError, OSError) as err:
            results[i] = err
        bar.update(1)

    try:
        # a warm scan is stat calls and small reads, GIL-bound: threads only pay for cold ones
        cold = len(entries) >= 16 and len(cache.files) < len(entries)
        if cold:
            with ThreadPoolExecutor(SCAN_WORKERS) as pool:
                list(pool.map(one, range(len(entries))))
        else:
            for i in range(len(entries)):
                one(i)
    finally:
        bar.close()
    for r in results:
        if isinstance(r, BaseException):
            cache.save()  # what was scanned before the bad adapter stays cached
            raise r
    cache.save()
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------ weights on the host
class HostWeights:
    """Each adapter's per-module A and B·scaling, read on demand from its memory-mapped weight file.

    At most `max_open` files stay open (an LRU): a forward pass reads one composition's adapters
    module by module, so their files stay mapped across the modules of one load."""

    def __init__(self, names: list[str], scans: list[AdapterScan], keys: list[dict[str, tuple[str, str]]],
                 scalings: list[float], dtype: torch.dtype, max_open: int = 128):
        self.names = names
        self.files = [s.weight_file for s in scans]
        self._stats = [(s.weight_stat.st_size, s.weight_stat.st_mtime_ns) for s in scans]
        self.keys = keys
        self.scalings = scalings
        self.dtype = dtype
        self.max_open = max_open
        self._open: OrderedDict[int, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def _handle(self, i: int):
        h = self._open.get(i)
        if h is not None:
            self._open.move_to_end(i)
            return h
        f = self.files[i]
        try:
            st = f.stat()
        except OSError:
            st = None
        if st is None or (st.st_size, st.st_mtime_ns) != self._stats[i]:
            raise IloraError(f"adapter {self.names[i]}: {f.name} changed on disk since the library was opened; "
                             "rerun so the library (and its digests) is read again")
        if f.name.endswith(".safetensors"):
            from safetensors import safe_open

            h = safe_open(str(f), framework="pt", device="cpu")
        else:
            try:
                h = _DictHandle(torch.load(str(f), map_location="cpu", weights_only=True, mmap=True))
            except RuntimeError:  # the legacy (non-zip) format cannot be mapped: read it
                h = _DictHandle(torch.load(str(f), map_location="cpu", weights_only=True))
        self._open[i] = h
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return h

    def tensor(self, i: int, key: str) -> torch.Tensor:
        return self._handle(i).get_tensor(key)

    def rows(self, module: str, indices, shape_A, shape_B) -> tuple[torch.Tensor, torch.Tensor]:
        """A [k, r, d_in] and B·scaling [k, d_out, r] of adapters `indices` in the library dtype,
        computed as the in-memory stack always was (float32, scaling applied in float32)."""
        indices = [int(i) for i in indices]
        if not indices:
            return torch.zeros(0, *shape_A, dtype=self.dtype), torch.zeros(0, *shape_B, dtype=self.dtype)
        A = torch.stack([self.tensor(i, self.keys[i][module][0]).to(torch.float32) for i in indices])
        B = torch.stack([self.tensor(i, self.keys[i][module][1]).to(torch.float32) * self.scalings[i] for i in indices])
        return A.to(self.dtype), B.to(self.dtype)

    def close(self) -> None:
        self._open.clear()


class _DictHandle:
    def __init__(self, tensors: dict):
        self._t = tensors

    def get_tensor(self, key: str) -> torch.Tensor:
        return self._t[key]


class LazyTexts(Mapping):
    """adapter id -> its texts, read from texts.jsonl on first access (a library of thousands of
    adapters opens without reading thousands of text files)."""

    def __init__(self, entries):
        self._entries = {e.name: e for e in entries if e.texts_path is not None}
        self._texts: dict[str, list[str]] = {}

    def __getitem__(self, name: str) -> list[str]:
        hit = self._texts.get(name)
        if hit is None:
            from ilora_eval.adapter_files import read_texts

            hit = self._texts[name] = read_texts(self._entries[name])
        return hit

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries


# ------------------------------------------------------------------ sampled texts
SAMPLED_TEXTS_DIR = "texts"  # in the library's index folder: what `library build --texts-from` sampled


def sampled_texts_path(index_dir: Path, name: str) -> Path:
    """Where `library build --texts-from` puts adapter `name`'s sampled texts (ids may hold `/`)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if safe != name:  # two ids that sanitize alike must not share a file
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return Path(index_dir) / SAMPLED_TEXTS_DIR / f"{safe}.jsonl"


def with_sampled_texts(entries, index_dir: Path):
    """Adapters without their own texts.jsonl use the texts `library build --texts-from` sampled."""
    from dataclasses import replace

    out = []
    for e in entries:
        if e.texts_path is None:
            p = sampled_texts_path(index_dir, e.name)
            if p.is_file():
                e = replace(e, texts_path=p)
        out.append(e)
    return out
