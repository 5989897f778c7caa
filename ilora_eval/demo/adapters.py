"""Writes trained LoRA weights as ordinary PEFT adapter directories (one per skill)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ilora_eval.demo.specs import BASE_MODEL_NAME, LoraSpec
from ilora_eval.testing import write_texts


def lora_config(spec: LoraSpec):
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=BASE_MODEL_NAME,
    )


def save_library(base_model, adapters: dict, spec: LoraSpec, library_dir: Path,
                 texts: dict[str, list[str]]) -> None:
    """``adapters``: skill -> PEFT-format state dict (``train.train_loras``);
    ``texts``: skill -> sample of training texts (written to ``texts.jsonl``)."""
    from peft import get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(copy.deepcopy(base_model), lora_config(spec))
    peft_model.peft_config["default"].base_model_name_or_path = BASE_MODEL_NAME
    library_dir.mkdir(parents=True, exist_ok=True)
    for name, state in adapters.items():
        result = set_peft_model_state_dict(peft_model, state)
        if result.unexpected_keys:
            raise RuntimeError(f"adapter {name}: unexpected keys {result.unexpected_keys[:3]}")
        out = library_dir / name
        peft_model.save_pretrained(str(out), save_embedding_layers=False)
        _normalise(out)
        write_texts(out, texts[name])


def _normalise(adapter_dir: Path) -> None:
    """Byte-stable adapter directory: PEFT writes ``target_modules`` from a set (its order
    follows the interpreter's string hashing) and adds a generic model card."""
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (adapter_dir / "README.md").unlink(missing_ok=True)
