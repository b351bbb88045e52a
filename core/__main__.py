"""python -m core: one training from the command line, no Ray.

    python -m core --dataset 8gaussians --prior vamp_to_mog --budget quick --out runs/x
    python -m core --dataset rings --set beta_neg=2.0 --set clip=none --out runs/y

Every config key is also a flag (--beta-rec 0.3, --clip none, --learnable-weights false).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from core.config import BUDGETS, DATASETS, ConfigError, TrainConfig, resolve_config
from core.errors import TrainingDiverged

PARSERS = {bool: lambda s: _parse_bool(s), int: int, float: float, str: str}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (expected true or false)")


def _parse_int_list(text: str) -> list[int]:
    """'0,80,120' -> [0, 80, 120]; '' -> []."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"{text!r} is not a comma-separated list of integers (e.g. 0,80,120)"
        raise argparse.ArgumentTypeError(message) from None


def _parse_value(text: str):
    """A --set value: JSON when it parses (numbers, true/false, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="8gaussians", choices=DATASETS)
    parser.add_argument("--budget", default="quick", choices=BUDGETS)
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json, samples, figure, checkpoint")
    parser.add_argument("--resume", type=Path, default=None, help="a checkpoint.pt to continue from")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    hints = TrainConfig.__annotations__
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("dataset", "extra", "lr_milestones"):
            continue
        hint = str(hints[field.name])
        kind = next((t for t in (bool, int, float, str) if t.__name__ in hint), str)
        parse = _parse_int_list if hint.startswith("tuple") else PARSERS[kind]  # --metric-epochs 0,80,120
        switch = {"nargs": "?", "const": True} if kind is bool else {}  # a bare --download means true
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=parse, default=None, **switch)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.train import train

    args = build_parser().parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name not in ("dataset", "extra", "lr_milestones") and getattr(args, f.name) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set {item!r} must be KEY=VALUE", file=sys.stderr)
            return 2
        overrides[key.strip()] = _parse_value(value)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = resolve_config(args.dataset, args.budget, **overrides)
        resume = torch.load(args.resume, weights_only=False) if args.resume else None
        if resume is not None:
            config = TrainConfig.from_dict(resume["config"])
        metrics = train(config, resume=resume, out_dir=args.out, progress=True,
                        on_checkpoint=_saver(args.out) if args.out else None)
    except (ConfigError, FileNotFoundError) as error:  # FileNotFoundError: image data or Inception weights missing
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}; the last good checkpoint is in {args.out}/checkpoint.pt" if args.out
              else f"error: {error}", file=sys.stderr)
        return 3
    print(json.dumps({key: _shown(value) for key, value in metrics.items()}, indent=1))
    if args.out:
        print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} in {args.out}")
    return 0


def _shown(value):
    """A metric for the printout: floats to 4 decimals, except tiny ones (gnelbo is ~1e-7, which 4 decimals would
    print as 0.0) that keep 5 significant digits (3.1416e-07)."""
    if not isinstance(value, float):
        return value
    return float(f"{value:.4e}") if 0 < abs(value) < 1e-3 else round(value, 4)


def _saver(out: Path):
    """Keep the latest checkpoint in OUT while training, so a crash or divergence loses no finished work."""
    out.mkdir(parents=True, exist_ok=True)

    def save(state: dict) -> None:
        tmp = out / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(out / "checkpoint.pt")

    return save


if __name__ == "__main__":
    sys.exit(main())
