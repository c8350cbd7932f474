"""The `soundsift` command: wires one module per subcommand (each registers its own parser).

Exit codes: 0 success, 1 a file (or the model) failed, 2 usage error (bad flags or labels). Every
error a subcommand lets through is a SoundsiftError, answered with one line and its class's
``exit_code`` (soundsift.errors: the same table the server takes its HTTP statuses from).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from soundsift.cli import (
    batch,
    classify,
    detect,
    eval,
    export,
    export_index,
    index,
    models,
    monitor,
    search,
    serve,
    teach,
)
from soundsift.errors import SoundsiftError

SUBCOMMANDS = (classify, batch, eval, detect, teach, monitor, serve, export, index, export_index, search, models)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="soundsift: %(message)s")
    try:
        return args.handler(args)
    except SoundsiftError as error:
        print(f"soundsift {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("soundsift: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`soundsift models | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soundsift",
        description="Zero-shot audio classification with CLAP: give a sound and labels in plain words.",
        epilog="Options that are settings (model, device, backend, templates, thresholds, limits, server options) "
        "also read SOUNDSIFT_<NAME> environment variables, e.g. SOUNDSIFT_MODEL; flags win over them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        subcommand.register(commands)
    return parser
