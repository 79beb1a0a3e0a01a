"""The ``convlens`` command: registers the subcommands and turns errors into one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from convlens.cli import (
    ablate,
    cam,
    demo,
    evaluate,
    filters,
    layers,
    plot,
    predict,
    report,
    sweep,
    train,
    units,
)

COMMANDS = (
    train,
    evaluate,
    predict,
    sweep,
    plot,
    layers,
    filters,
    units,
    ablate,
    cam,
    report,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convlens",
        description="Look inside convolutional networks, and train the networks you look into.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", None)
        print(f"\nconvlens: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:
        print(f"convlens {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
