"""Whether a run's files can be written where they are asked for, checked before any work starts."""

from __future__ import annotations

import tempfile
from pathlib import Path


def unwritable(folder: Path) -> str | None:
    """Why nothing can be created in `folder` (or, where it does not exist yet, in the folder that would hold it), or
    None. Creates nothing: a real write of a temporary file, removed at once (as root, os.access says yes even on
    /sys)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".priorstudy-write-check-"):
            pass
    except OSError as err:
        return f"cannot write in {existing} ({err.strerror})"
    return None
