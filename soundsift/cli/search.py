"""`soundsift search`: find where in the indexed recordings a sound occurs, by text or by example."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from soundsift.cli.common import EXIT_OK, add_model_options, add_translation_options
from soundsift.cli.index import add_index_option, open_library
from soundsift.errors import UsageError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "search",
        help="search indexed recordings by description or example",
        description='Rank the places in the indexed recordings that sound like QUERY (e.g. "door slamming"; '
        'comma-separated descriptions are searched together; " -music" or "(not music)" excludes a sound; '
        "Chinese is translated like labels) or like an example (--like FILE, or FILE@START-END for a span). "
        "Adjacent matching windows of one file are merged into one hit with its start and end.",
    )
    parser.add_argument("query", nargs="?", metavar="QUERY", help="what to find, in words")
    add_index_option(parser)
    parser.add_argument("--like", metavar="FILE[@START-END]", help="search by example: a sound file, or a span of it")
    parser.add_argument("--top", type=int, default=20, help="hits to show (default 20)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="SOUND", help="a sound hits must not be; repeatable"
    )
    filters = parser.add_argument_group("filters")
    filters.add_argument("--path", dest="path_glob", metavar="GLOB", help="only files matching, e.g. '*/2024/*.wav'")
    filters.add_argument("--min-duration", type=float, metavar="S", help="only files at least this long (seconds)")
    filters.add_argument("--max-duration", type=float, metavar="S", help="only files at most this long (seconds)")
    filters.add_argument("--after", metavar="DATE", help="only files modified on or after DATE (YYYY-MM-DD[THH:MM])")
    filters.add_argument("--before", metavar="DATE", help="only files modified before DATE")
    search = parser.add_argument_group("search")
    search.add_argument(
        "--exact",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare every window (default: exact below the ANN threshold, approximate above)",
    )
    search.add_argument("--gap", type=float, default=0.0, metavar="S", help="merge hits of a file this close (s)")
    add_translation_options(parser.add_argument_group("translation"))
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from soundsift.search.query import parse_span

    if (args.query is None) == (args.like is None):
        raise UsageError("give a QUERY in words or --like FILE (one of the two)")
    library = open_library(args)
    like, start, end = parse_span(args.like) if args.like else (None, None, None)
    result = library.search(
        args.query,
        like=like,
        like_start_s=start,
        like_end_s=end,
        like_name=like,
        top=args.top,
        exclude=args.exclude,
        path_glob=args.path_glob,
        min_duration_s=args.min_duration,
        max_duration_s=args.max_duration,
        modified_after=_timestamp(args.after, "--after"),
        modified_before=_timestamp(args.before, "--before"),
        exact=args.exact,
        merge_gap_s=args.gap,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.model_dump(), ensure_ascii=False))
    else:
        print(_render(result))
    return EXIT_OK


def _timestamp(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None


def _render(result: Any) -> str:
    if not result.hits:
        return f"no hits in {result.windows_searched} windows"
    lines = [f"{'score':>6}  {'start':>9}  {'end':>9}  file"]
    for hit in result.hits:
        lines.append(f"{hit.score:6.3f}  {_clock(hit.start_s):>9}  {_clock(hit.end_s):>9}  {hit.path}")
    how = "exact" if result.exact else "approximate (ANN)"
    lines.append(f"{len(result.hits)} hits from {result.windows_searched} windows ({how} search)")
    if result.vetoed:
        lines.append(f"{result.vetoed} windows left out: more like {', '.join(result.excluded)}")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:05.2f}" if hours else f"{minutes}:{rest:05.2f}"
