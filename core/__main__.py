"""python -m core: one training from the command line, no Ray.

    python -m core --dataset 8gaussians --prior vamp_to_mog --budget quick --out runs/x
    python -m core --dataset rings --set beta_neg=2.0 --set clip=none --out runs/y
    python -m core --resume runs/x/checkpoint.pt --out runs/x

Every config key is also a flag (--beta-rec 0.3, --clip none, --learnable-weights false). With --out, OUT/checkpoint.pt
holds the latest state (replaced at every evaluation, every eval_every units), so Ctrl-C or a crash loses at most
one eval_every. --resume continues a checkpoint exactly, with the config it holds: a flag (or --budget) that would
change that config is refused; --device, --data-dir and --download may differ (where the run runs and where its
data lies), as may --out and --threads. A checkpoint is read as plain data only: a file that would run code is
refused. Exit codes: 0 done, 2 bad input (nothing trained), 3 diverged, 130 interrupted (the message says how to
resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.config import (
    BUDGETS,
    CHOICES,
    DATASETS,
    FIELD_DOCS,
    ConfigError,
    TrainConfig,
    budget_defaults,
    resolve_config,
)
from core.errors import TrainingDiverged
from core.overrides import kinds, parse_assignments, parse_value
from core.paths import unwritable

DEFAULT_DATASET, DEFAULT_BUDGET = "8gaussians", "quick"
RESUME_MAY_CHANGE = ("device", "data_dir", "download")  # where a run runs and where its data lies, not what it is


def _flag_type(key: str):
    """argparse's type of a config flag: core.overrides' parser, its ConfigError as argparse's own message."""

    def parse(text: str):
        try:
            return parse_value(key, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = key
    return parse


def _default_shown(field: dataclasses.Field) -> str:
    """TrainConfig's default (the paper's 2D setting); a dataset and a budget change many of them."""
    value = field.default
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=None, choices=DATASETS, help=f"(default: {DEFAULT_DATASET})")
    parser.add_argument("--budget", default=None, choices=BUDGETS, help=f"(default: {DEFAULT_BUDGET})")
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json, samples, figure, checkpoint")
    parser.add_argument(
        "--resume", type=Path, default=None, help="a checkpoint.pt to continue from, with the config it holds"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, as its flag below takes it (e.g. metric_epochs=0,40); the defaults "
        "shown are TrainConfig's (the paper's 2D setting), which --dataset and --budget change",
    )
    for field in dataclasses.fields(TrainConfig):
        if field.name == "dataset":
            continue
        kind = kinds()[field.name]
        switch = {"nargs": "?", "const": True} if kind.base is bool else {}  # a bare --download means true
        choices = f"; one of {', '.join(CHOICES[field.name])}" if field.name in CHOICES else ""
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=_flag_type(field.name),
            default=None,
            metavar=field.name.upper() if not switch else None,
            help=f"{FIELD_DOCS[field.name]} (default: {_default_shown(field)}{choices})",
            **switch,
        )
    return parser


class UsageError(ValueError):
    """The command line asks for something that cannot be done; the message names the flag and why."""


def main(argv: list[str] | None = None) -> int:
    from core.train import train

    args = build_parser().parse_args(argv)
    config, saver = None, None
    try:
        config, resume = _config_and_state(args)
        if args.out is not None:
            _check_out(args.out)
            saver = _Saver(args.out)
        if args.threads:
            torch.set_num_threads(args.threads)
        with _CtrlC() as ctrl_c:
            metrics = train(
                config, resume=resume, out_dir=args.out, progress=True, on_checkpoint=saver, on_report=ctrl_c.check
            )
    except (ConfigError, CheckpointError, UsageError, FileNotFoundError) as error:
        # FileNotFoundError: image data, Inception weights or the --resume file missing
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        if saver is None:
            print(f"error: {error}", file=sys.stderr)
        elif saver.unit is None:
            print(f"error: {error}; no checkpoint was written before it", file=sys.stderr)
        else:
            print(
                f"error: {error}; the last good checkpoint, {_position(config, saver.unit)}, is {saver.path}",
                file=sys.stderr,
            )
        return 3
    except KeyboardInterrupt:
        print(_interrupted(args, config, saver), file=sys.stderr)
        return 130
    print(json.dumps({key: _shown(value) for key, value in metrics.items()}, indent=1))
    if args.out:
        print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} in {args.out}")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line sets: --dataset, every config flag, --set KEY=VALUE."""
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None
    }
    overrides.update(parse_assignments(args.set))
    return overrides


def _config_and_state(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's config and, with --resume, the training state to continue. A resume takes the checkpoint's
    config; flags (and --budget) that would change it are refused, unless they equal it or are RESUME_MAY_CHANGE."""
    given = _overrides(args)
    if args.resume is None:
        dataset = given.pop("dataset", DEFAULT_DATASET)
        return resolve_config(dataset, args.budget or DEFAULT_BUDGET, **given), None
    state = load_checkpoint(args.resume)
    try:
        saved = TrainConfig.from_dict(state["config"]).to_dict()
    except ConfigError as err:
        raise CheckpointError(f"{args.resume} holds a config this priorstudy cannot run: {err}") from None

    def changes(key: str, value: Any) -> bool:
        return key in saved and key not in RESUME_MAY_CHANGE and not _same(value, saved[key])

    def was(key: str) -> str:
        return f"checkpoint: {_flag_value(saved[key])}"

    changed = [
        f"--{key.replace('_', '-')} {_flag_value(value)} ({was(key)})"
        for key, value in given.items()
        if changes(key, value)
    ]
    if args.budget is not None:
        dataset, others = given.get("dataset", saved["dataset"]), {k: v for k, v in given.items() if k != "dataset"}
        try:
            wanted = resolve_config(dataset, args.budget, **others).to_dict()
        except ConfigError:  # the budget's values and the flags make no valid run: compare them as they are
            wanted = {**budget_defaults(dataset, args.budget, given.get("model", saved["model"])), **others}
        budget = [
            f"{key} = {_flag_value(value)}, {was(key)}"
            for key, value in wanted.items()
            if key not in given and changes(key, value)
        ]
        if budget:
            more = f"; and {len(budget) - 3} more" if len(budget) > 3 else ""
            changed.append(f"--budget {args.budget} (sets {'; '.join(budget[:3])}{more})")
    if changed:
        raise UsageError(
            f"--resume {args.resume} continues the run its checkpoint holds, so it cannot change its config: "
            f"{', '.join(changed)}; leave these out (only --device, --data-dir, --download, --out and --threads "
            f"may differ), or start a new run without --resume"
        )
    kept = {key: value for key, value in given.items() if key in RESUME_MAY_CHANGE or key not in saved}
    return TrainConfig.from_dict({**saved, **kept}), state  # a key not in saved: from_dict names it unknown


def _same(value: Any, saved: Any) -> bool:
    """A flag's value equals the checkpoint's: a list as the saved list, 1 as 1.0, but true not as 1."""

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return plain(value) == plain(saved) and isinstance(value, bool) == isinstance(saved, bool)


def _flag_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot hold the run, before training: a file on the way, or a place where nothing can be
    written."""
    problem = unwritable(out)
    if problem:
        raise UsageError(f"--out {out}: {problem}")


class _CtrlC:
    """Ctrl-C raises KeyboardInterrupt and is remembered: Python drops an exception raised while a finalizer runs
    ("Exception ignored in: <finalize ...> KeyboardInterrupt", and training went on), so the next report raises it
    again. Only the main thread may own signals: elsewhere Python's default handler stays."""

    def __init__(self):
        self.pressed = False
        self._previous = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._press)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _press(self, signum, frame) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def check(self, report: dict[str, Any] | None = None) -> None:
        if self.pressed:
            raise KeyboardInterrupt


class _Saver:
    """on_checkpoint for --out: OUT/checkpoint.pt replaced atomically by each new state, so an interruption or a
    crash loses at most one eval_every."""

    def __init__(self, out: Path):
        self.path = out / "checkpoint.pt"
        self.unit: int | None = None  # of the last state saved

    def __call__(self, state: dict[str, Any]) -> None:
        save_checkpoint(state, self.path)
        self.unit = state["unit"]


def _interrupted(args: argparse.Namespace, config: TrainConfig | None, saver: _Saver | None) -> str:
    """What Ctrl-C leaves behind, and the command that continues from it."""
    if saver is not None and saver.unit is not None:
        return (
            f"interrupted: the last checkpoint, {_position(config, saver.unit)}, is {saver.path}; "
            f"continue with: {_resume_command(saver.path, args)}"
        )
    if args.resume is not None:
        return (
            f"interrupted before a new checkpoint: {args.resume} is still the latest; "
            f"continue with: {_resume_command(args.resume, args)}"
        )
    every = f"every eval_every = {config.eval_every} {_unit(config)}s" if config is not None else "at each evaluation"
    if args.out is not None:
        return f"interrupted before the first checkpoint (one is written {every}): nothing to resume"
    return (
        f"interrupted: no checkpoint was written, as there is no --out; with --out DIR, DIR/checkpoint.pt keeps "
        f"the latest one ({every}) and python -m core --resume DIR/checkpoint.pt --out DIR continues it"
    )


def _unit(config: TrainConfig | None) -> str:
    return config.unit_name if config is not None else "iteration"


def _position(config: TrainConfig, unit: int) -> str:
    return f"{_unit(config)} {unit} of {config.total_units}"


def _resume_command(checkpoint: Path, args: argparse.Namespace) -> str:
    words = ["python", "-m", "core", "--resume", str(checkpoint)]
    words += ["--out", str(args.out)] if args.out is not None else []
    words += ["--threads", str(args.threads)] if args.threads else []
    return shlex.join(words)


def _shown(value):
    """A metric for the printout: floats to 4 decimals, except tiny ones (gnelbo is ~1e-7, which 4 decimals would
    print as 0.0) that keep 5 significant digits (3.1416e-07)."""
    if not isinstance(value, float):
        return value
    return float(f"{value:.4e}") if 0 < abs(value) < 1e-3 else round(value, 4)


if __name__ == "__main__":
    sys.exit(main())
