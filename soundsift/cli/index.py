"""`soundsift index`: embed every recording under PATH into a searchable index folder."""

from __future__ import annotations

import argparse
import json
from typing import Any

from soundsift.cli.common import EXIT_OK, add_gate_option, add_model_options, add_progress_option
from soundsift.core.settings import ModelSettings
from soundsift.errors import EXIT_FAILED, UsageError

EXIT_INTERRUPTED = 130


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "index",
        help="index recordings for search (incremental, resumable)",
        description="Embed every audio and video file under PATH (folders recursively) into the index folder "
        "--index, long files as overlapping windows with their start and end times. Rerunning indexes only new "
        "and changed files (size, modified time, then content hash) and drops files deleted from the folders "
        "given; with no PATH it rescans the folders indexed before. An interrupted run (Ctrl-C) keeps every "
        "finished file and the next run resumes. Files that cannot be decoded are recorded, not fatal "
        "(exit code 1 when any failed in this run). A file is dropped only when its folder was read and the file "
        "is not in it: a folder that cannot be read is reported and what the index holds under it is kept "
        "(exit code 1 unless --allow-unreadable). The index remembers its model and refuses another.",
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or folders (default: the folders indexed before)"
    )
    add_index_option(parser)
    parser.add_argument("--status", action="store_true", help="only show what the index holds")
    parser.add_argument(
        "--from-parquet",
        metavar="FILE",
        help="load the windows of a file written by 'soundsift export-index' (into any --store) instead of "
        "embedding audio; a new index takes the file's model and window layout",
    )
    parser.add_argument("--json", action="store_true", help="print the run's report (or --status) as JSON")
    layout = parser.add_argument_group("index layout (fixed when the index is created)")
    layout.add_argument("--window", dest="window_s", type=float, help="window length, seconds (default 5)")
    layout.add_argument("--hop", dest="hop_s", type=float, help="step between windows, seconds (default 2.5)")
    layout.add_argument(
        "--store",
        help="where vectors live: lance (default, embedded in the folder), qdrant:http://HOST:6333 (a Qdrant "
        "server or cluster; API key from SOUNDSIFT_QDRANT_API_KEY), qdrant:local, postgresql://USER@HOST:5432/DB "
        "(PostgreSQL with pgvector; password from the URL or PGPASSWORD/~/.pgpass, never stored), "
        "milvus://HOST:19530 (token from SOUNDSIFT_MILVUS_TOKEN), milvus:local or FILE.db (Milvus Lite)",
    )
    layout.add_argument(
        "--ann-threshold",
        type=int,
        help="build the approximate (ANN) index once the index holds this many windows (default 20000)",
    )
    layout.add_argument(
        "--ef-search",
        type=int,
        help="PostgreSQL stores: candidates the HNSW scan keeps per search, 1-1000 (default 200; more finds more "
        "of the true neighbours, slower); kept for later searches",
    )
    execution = parser.add_argument_group("execution")
    execution.add_argument("--workers", type=int, default=2, help="decoding threads (local engine, default 2)")
    execution.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or ray")
    execution.add_argument("--ray-address", help="join an existing Ray cluster (default: start a local instance)")
    execution.add_argument("--retry-failed", action="store_true", help="try files that failed before again")
    add_gate_option(execution)
    execution.add_argument(
        "--allow-unreadable",
        action="store_true",
        help="folders that cannot be read are still reported, but do not make the exit code 1",
    )
    add_progress_option(execution)
    add_model_options(parser)
    parser.set_defaults(handler=run)


def add_index_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, metavar="DIR", help="the index folder (created on first use)")


def open_library(args: argparse.Namespace, **options: Any) -> Any:
    """The Library of --index with the model flags given (the index's own model otherwise)."""
    from soundsift.search import Library

    settings = {
        name: getattr(args, name) for name in ModelSettings.model_fields if getattr(args, name, None) is not None
    }
    return Library(args.index, **settings, **options)


def run(args: argparse.Namespace) -> int:
    library = open_library(
        args,
        window_s=args.window_s,
        hop_s=args.hop_s,
        store=args.store,
        ann_threshold=args.ann_threshold,
        ef_search=args.ef_search,
    )
    if args.status:
        return _status(library, args.json)
    if args.from_parquet:
        if args.paths:
            raise UsageError("--from-parquet loads a file instead of indexing PATHs: give one or the other")
        report = library.load_parquet(args.from_parquet)
        print(json.dumps(report.model_dump(), ensure_ascii=False) if args.json else _render(report))
        return EXIT_OK
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    bar = _Bar(args.progress)
    try:
        report = library.add(
            args.paths,
            workers=args.workers,
            retry_failed=args.retry_failed,
            progress=bar.update,
            engine=args.engine,
            ray_address=args.ray_address,
            min_dbfs=args.min_dbfs,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.model_dump(), ensure_ascii=False))
    else:
        print(_render(report))
    if report.interrupted:
        return EXIT_INTERRUPTED
    unreadable_fails = bool(report.unreadable) and not args.allow_unreadable
    return EXIT_FAILED if report.failed or unreadable_fails else EXIT_OK


def _status(library: Any, as_json: bool) -> int:
    status = library.status()
    if as_json:
        print(json.dumps(status.model_dump(), ensure_ascii=False))
        return EXIT_OK
    if not status.exists:
        print(f"{status.path}: no index yet")
        return EXIT_OK
    print(
        f"{status.path}: {status.files_indexed} files, {status.windows} windows, {status.audio_hours:.2f} h of audio; "
        f"model {status.model} ({status.dim}-d), {status.window_s:g} s windows every {status.hop_s:g} s, "
        f"store {status.store}, {'approximate (ANN) index' if status.approximate_index else 'exact search'}"
    )
    if status.files_pending:
        print(f"{status.files_pending} files left unfinished by an interrupted run (the next run redoes them)")
    for problem in status.failures:
        print(f"failed: {problem.path}: {problem.error}: {problem.message}")
    return EXIT_OK


def _render(report: Any) -> str:
    rate = report.processed / report.wall_s if report.wall_s else 0.0
    lines = [
        f"{report.files_seen} files seen in {report.wall_s:.1f} s: {report.added} added, {report.changed} changed, "
        f"{report.resumed} resumed, {report.unchanged + report.touched} unchanged, {report.removed} removed, "
        f"{len(report.failed)} failed, {len(report.unreadable)} folders unreadable; "
        f"{report.windows_added} windows from {report.audio_s / 60:.1f} min of audio "
        f"({rate:.2f} files/s)" + (f"; {report.windows_gated} quiet windows gated" if report.windows_gated else "")
    ]
    lines += [f"failed: {problem.path}: {problem.error}: {problem.message}" for problem in report.failed]
    lines += [f"unreadable: {problem.path}: {problem.message}" for problem in report.unreadable]
    if report.interrupted:
        lines.append("interrupted: every finished file is saved; rerun the same command to resume")
    return "\n".join(lines)


class _Bar:
    """The tqdm bar of `soundsift batch`, fed by the library's progress callback."""

    def __init__(self, enabled: bool | None) -> None:
        self.enabled, self.bar, self.done = enabled, None, 0

    def update(self, done: int, total: int) -> None:
        from soundsift.jobs.batch import make_progress

        if self.bar is None and self.done == 0 and total:
            self.bar = make_progress(total, self.enabled)
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
