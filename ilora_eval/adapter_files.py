"""What one PEFT LoRA adapter folder holds, read without the rest of the library: the file names,
the state-dict key pattern, the adapter's config and its texts. Both the library (discovery,
validation) and its host store (memory-mapped weights, digests) build on it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ilora_eval.errors import IloraError

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
TEXTS_NAME = "texts.jsonl"
INDEX_DIR = "ilora_index"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class AdapterEntry:
    name: str
    path: Path
    texts_path: Path | None = None


def read_config(entry: AdapterEntry) -> tuple[dict, bytes]:
    raw = (entry.path / CONFIG_NAME).read_bytes()
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError:
        raise IloraError(f"adapter {entry.name}: {CONFIG_NAME} is not valid JSON; re-save the adapter") from None
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise IloraError(f"adapter {entry.name} is a {cfg.get('peft_type')} adapter; only LoRA adapters can be composed")
    if cfg.get("use_dora"):
        raise IloraError(f"adapter {entry.name} uses DoRA; only plain LoRA adapters can be composed")
    return cfg, raw


def read_texts(entry: AdapterEntry, limit: int | None = None) -> list[str]:
    texts = []
    with open(entry.texts_path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise IloraError(f"{entry.texts_path}:{lineno} is not a JSON line with a 'text' field; fix or remove the file") from None
            if limit and len(texts) >= limit:
                break
    return texts
