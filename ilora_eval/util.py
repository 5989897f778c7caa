"""Small helpers shared across the package: one atomic writer, one true/false parser."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in TRUE


def is_false(value) -> bool:
    """An explicit off switch (`fit_cache=false`); None means "not given"."""
    return value is not None and (value is False or str(value).strip().lower() in FALSE)


def write_atomic(target, content: str | bytes | Callable[[str], None]) -> Path:
    """Writes `target` through a temporary file in its folder, so readers never see half a file.
    `content` is text, bytes, or a function that writes the temporary path."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".")
    os.close(fd)
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            Path(tmp).write_bytes(content)
        else:
            Path(tmp).write_text(content, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
