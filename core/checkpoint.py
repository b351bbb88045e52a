"""Checkpoints on disk: written atomically, read as plain data only.

A checkpoint is core.train's training state (config, unit, step, game, rng, scores): dicts, lists, strings,
numbers and tensors, nothing else. It is read with torch.load(weights_only=True), whose unpickler builds only such
data, so a file that would run code when unpickled is refused before anything in it runs. Every reader of a
checkpoint (python -m core --resume, a restored Ray trial) goes through `load_checkpoint`.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_KEYS = ("config", "unit", "step", "game", "rng", "scores")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


class CheckpointError(ValueError):
    """A file is not what it should be (a checkpoint, a weights file); the message names the file and why."""


def read_plain_data(path: str | os.PathLike, what: str = "a priorstudy checkpoint") -> Any:
    """The contents of a torch.save file, on the CPU, if they are plain data (tensors, numbers, strings, lists,
    dicts); else CheckpointError '<path> is not <what>: <why>'. FileNotFoundError when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not {what}: no such file")
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointError(f"{path} is not {what}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a plain pickle, refused below
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # untrusted bytes: torch's parsers fail with any error type (a text file: KeyError: 101)
        raise CheckpointError(f"{path} is not {what}: {_why_unreadable(head, err)}") from None


def _why_unreadable(head: bytes, err: Exception) -> str:
    blocked = re.search(r"GLOBAL (\S+)", str(err))
    if blocked:
        return (
            f"it contains a reference to {blocked.group(1)}, which is not plain data (tensors, numbers, strings, "
            f"lists, dicts) and could run code when loaded; refused, nothing in it was run"
        )
    if head.startswith(ZIP_MAGIC):
        return f"it is truncated or corrupted ({str(err).split('. ')[0]})"
    return f"it is not a file that torch.save wrote (it starts with {head!r})"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training state that core.train(resume=...) continues; CheckpointError naming the file otherwise."""
    state = read_plain_data(path)
    if not isinstance(state, dict) or not set(CHECKPOINT_KEYS) <= set(state) or not isinstance(state["config"], dict):
        raise CheckpointError(
            f"{path} is not a priorstudy checkpoint: it holds {_describe(state)}, not a training "
            f"state (a dict with keys {', '.join(CHECKPOINT_KEYS)})"
        )
    return state


def _describe(data: Any) -> str:
    if isinstance(data, dict):
        keys = sorted(map(str, data))
        return f"a dict with keys {[*keys[:6], '...'] if len(keys) > 6 else keys}"
    return "a tensor" if isinstance(data, torch.Tensor) else f"a {type(data).__name__}"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save to a temporary file, then rename it over `path`: an interruption leaves the previous checkpoint
    whole, and no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
