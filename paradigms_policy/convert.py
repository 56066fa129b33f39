"""paradigms-convert: write our one-file checkpoint from a DiffusionPolicy .ckpt or a LeRobot policy.

    paradigms-convert SRC OUT [--trust-checkpoint]

SRC: a DiffusionPolicy workspace checkpoint, a LeRobot diffusion ``pretrained_model/`` directory (or
the run directory holding it), or one of ours. OUT is loadable with ``weights_only=True`` and
records where it came from under ``source``. The node and the commands also take SRC directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import REQUIRED_KEYS, CheckpointError, save_checkpoint
from .formats import load_any_checkpoint

__all__ = ["convert", "main"]


def convert(src: str | Path, out: str | Path, *, trust_checkpoint: bool = False) -> Path:
    """Convert ``src`` (any supported format) into our checkpoint file ``out``."""
    checkpoint = load_any_checkpoint(src, trust_checkpoint=trust_checkpoint)
    fields = {k: v for k, v in checkpoint.items() if k not in ("format", "version")}
    missing = [k for k in REQUIRED_KEYS if k not in fields]
    if missing:
        raise CheckpointError(f"{src}: converted checkpoint lacks {missing}")
    fields.setdefault("source", {"format": "paradigms_policy", "path": str(src)})
    return save_checkpoint(out, **fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paradigms-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="DiffusionPolicy .ckpt, LeRobot pretrained_model/ directory, or our checkpoint")
    parser.add_argument("out", help="output checkpoint (.pt)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a pickle that needs more than the allow-list (runs code from the file: "
                             "only for files you trust)")
    args = parser.parse_args(argv)
    try:
        path = convert(args.src, args.out, trust_checkpoint=args.trust_checkpoint)
    except CheckpointError as exc:
        print(f"paradigms-convert: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
