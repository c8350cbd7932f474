"""`soundsift export-index`: an index's windows to Parquet (load them with `index --from-parquet`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soundsift.cli.common import EXIT_OK
from soundsift.cli.index import add_index_option


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export-index",
        help="write an index's windows (path, start, end, vector, model) to Parquet",
        description="Write one row per indexed window: path, start_s, end_s, vector, model, and the file's size, "
        "mtime_ns, sha256 and duration_s; the model's fingerprint and the window layout go into the file's "
        "metadata. 'soundsift index --from-parquet FILE --index DIR --store ...' loads it into any store: the way "
        "to move a library between stores or machines without embedding it again. Needs no model.",
    )
    add_index_option(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the Parquet file to write")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from soundsift.search import Library

    with Library(args.index) as library:
        files, windows = library.export_parquet(args.out)
    if args.json:
        print(json.dumps({"files": files, "windows": windows, "out": str(args.out)}))
    else:
        print(f"{windows} windows of {files} files written to {args.out}")
    return EXIT_OK
