"""The ``convlens`` command: registers the subcommands and turns errors into one line."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from convlens.cli import (
    ablate,
    cam,
    concepts,
    demo,
    dissect,
    evaluate,
    faithfulness,
    filters,
    layers,
    plot,
    predict,
    report,
    sanity,
    serve,
    sweep,
    tcav,
    train,
    units,
    visualize,
)
from convlens.cli.common import analysis_precision, check_device, parse_args

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
    faithfulness,
    sanity,
    dissect,
    concepts,
    tcav,
    visualize,
    report,
    serve,
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
        name = command.__name__.rsplit(".", 1)[-1]
        sub.choices[name].set_defaults(
            flags_of=getattr(command, "FLAGS", {}), parser_of=sub.choices[name]
        )
    return parser


def cli_message(text: str, parser: argparse.ArgumentParser, flags: Mapping[str, str]) -> str:
    """A library message for the command line: the library names the argument to fix
    as `name` (or `name=value`); here that becomes the command's flag, from ``flags``
    where the names differ (``run_dir`` -> ``--out``) or else ``--name``; a name that
    is no flag of this command loses its backticks."""
    # argparse keeps a parser's option strings in this (long-stable) private mapping
    options = parser._option_string_actions

    def flag(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in flags:
            return flags[name]
        option = "--" + name.replace("_", "-")
        return option if option in options else name

    return re.sub(r"`([A-Za-z_]+(?:=[A-Za-z]+)?)`", flag, text)


def _one_line_warnings(args: argparse.Namespace) -> Callable[..., None]:
    """``warnings.showwarning`` for a command: convlens's own warnings as one line
    with the flag to fix, others as Python shows them."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if category.__module__.startswith("convlens."):
            text = cli_message(str(message), args.parser_of, args.flags_of)
            print(f"convlens {args.command}: warning: {text}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args)
            check_device(args)
            with analysis_precision(args):
                return int(args.run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", None)
        print(f"\nconvlens: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:
        message = cli_message(str(e), args.parser_of, args.flags_of)
        print(f"convlens {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not out_of_memory(e):
            raise
        print(f"convlens {args.command}: error: {memory_message(e, args)}", file=sys.stderr)
        return 2


def out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: CUDA's or MPS's out-of-memory error, or the CPU
    allocator's."""
    text = str(e)
    return isinstance(e, MemoryError) or any(
        s in text for s in ("out of memory", "can't allocate memory", "Invalid buffer size")
    )


def memory_message(e: BaseException, args: argparse.Namespace) -> str:
    """One line for a failed allocation, naming what to lower."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    first = first if len(first) <= 120 else first[:117] + "..."
    where = getattr(args, "device", None) or "this device"
    if getattr(args, "batch_size", None) is not None:
        fix = f"lower --batch-size (now {args.batch_size})"
    else:
        fix = "use fewer or smaller images, or another --device"
    return f"out of memory on {where} ({first}); {fix}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
