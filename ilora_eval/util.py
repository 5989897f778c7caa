"""Small helpers shared across the package: one atomic writer, one true/false parser."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from ilora_eval.errors import IloraError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def as_bool(value, name: str = "value") -> bool:
    """A true/false model argument; anything else is refused (`check_base=flase` must not
    quietly switch the check off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise IloraError(f"{name}={value!r} is neither true nor false; give {name}=true or {name}=false")


def is_false(value) -> bool:
    """An explicit off switch (`fit_cache=false`); None means "not given"."""
    return value is not None and (value is False or str(value).strip().lower() in FALSE)


def current_umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux), else by the
    set-and-restore idiom."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(target, content: str | bytes | Callable[[str], None]) -> Path:
    """Writes `target` through a temporary file in its folder, so readers never see half a file.
    `content` is text, bytes, or a function that writes the temporary path. The file gets the
    mode a plain `open(target, "w")` would give it (0644 under umask 022): mkstemp's 0600 would
    make a shared results folder or fit cache unreadable to teammates."""
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
        os.chmod(tmp, 0o666 & ~current_umask())  # after writing: a writer may have replaced the file
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
