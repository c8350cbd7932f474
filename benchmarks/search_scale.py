"""Search at scale: indexing speed, query latency, recall of the approximate index, size on disk.

1. Indexing: `Library.add` over ESC-50 clips (../shared) with the full-size CLAP (random weights,
   same compute as the real one; benchmarks/random_model.py), torch on ``--threads`` cores:
   clips/s, windows/s and seconds of audio per second.
2. Vectors: ``--sizes`` synthetic 512-d unit vectors (clustered like real embeddings: 2,000 centres
   plus noise) in the LanceDB store the index uses: time to add and to build the ANN index
   (IVF-PQ with exact re-scoring), query latency p50/p95 exact and approximate, recall@10 of approximate against
   exact (queries are perturbed stored vectors), bytes on disk per window and per hour of audio
   (5 s windows every 2.5 s: 1,440 windows an hour).
   ``--stores lance,postgres,milvus`` repeats it for each store: PostgreSQL + pgvector (HNSW;
   ``--postgres URL``, or a server started from the pgserver wheel on 127.0.0.1 for the run) and
   Milvus Lite (exact FLAT search: recall 1 by construction). Disk bytes are LanceDB's folder, or
   PostgreSQL's relation sizes (table, its indexes and TOAST). The PostgreSQL server started for
   the run gets ``--pg-maintenance-mb`` of maintenance_work_mem (4 GB), so the HNSW graph is built
   in memory as on a server set up for it; a ``--postgres URL`` server is used as it is.

    python benchmarks/search_scale.py                          # 100k and 1M vectors, 2 cores
    python benchmarks/search_scale.py --sizes 100000 --json scale.json
    python benchmarks/search_scale.py --sizes 100000 --clips 0 --stores lance,postgres,milvus
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
ESC50 = BENCHMARKS.parents[1] / "shared" / "data" / "esc50-16k-fold1"
WINDOWS_PER_HOUR = 3600 / 2.5
DIM = 512


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def index_speed(clips: int, threads: int, workers: int, model_dir: Path, scratch: Path) -> dict[str, float]:
    import torch

    from soundsift import Library

    torch.set_num_threads(threads)
    files = sorted((ESC50 / "audio").glob("*.wav"))[:clips]
    source = scratch / "clips"
    source.mkdir(parents=True)
    for path in files:
        os.symlink(path, source / path.name)
    library = Library(scratch / "index", model=str(model_dir), device="cpu", batch_size=8)
    assert library.classifier.model_id  # load the model outside the timing
    started = time.perf_counter()
    report = library.add([source], workers=workers)
    wall = time.perf_counter() - started
    size = folder_bytes(scratch / "index")
    return {
        "clips": report.added,
        "windows": report.windows_added,
        "audio_s": report.audio_s,
        "wall_s": round(wall, 2),
        "clips_per_s": round(report.added / wall, 2),
        "windows_per_s": round(report.windows_added / wall, 2),
        "audio_s_per_s": round(report.audio_s / wall, 1),
        "index_bytes": size,
        "index_bytes_per_window": round(size / max(1, report.windows_added)),
    }


def clustered(count: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), count)
    vectors = centres[picks] + rng.normal(scale=0.6 / np.sqrt(DIM), size=(count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def open_bench_store(kind: str, size: int, scratch: Path, postgres_url: str | None) -> Any:
    from soundsift.search.stores import ModelStamp, open_store

    stamp = ModelStamp("benchmark", [[0.0] * DIM])
    collection = f"soundsift_bench{size}_{os.getpid()}"
    if kind == "lance":
        from soundsift.search.stores.lance import LanceStore

        return LanceStore(scratch / f"v{size}.lance", DIM)
    if kind == "postgres":
        assert postgres_url is not None
        return open_store(postgres_url, scratch, DIM, collection, stamp)
    if kind == "milvus":
        return open_store(str(scratch / f"milvus{size}.db"), scratch, DIM, collection, stamp)
    raise SystemExit(f"unknown store {kind!r}: lance, postgres or milvus")


def give_maintenance_memory(url: str, megabytes: int) -> None:
    """The server started for the run is the tests' (64 MB maintenance_work_mem). pgvector builds
    HNSW fast only while the graph fits in it (about 2.5 KB per 512-d vector: 250 MB at 100k,
    2.5 GB at 1M) and crawls on disk past that; a server meant for this many windows is given the
    memory, as pgvector's documentation says, so the benchmark's server is too."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"ALTER SYSTEM SET maintenance_work_mem = '{int(megabytes)}MB'")
        connection.execute("SELECT pg_reload_conf()")


def store_bytes(kind: str, store: Any, size: int, scratch: Path) -> int | None:
    if kind == "lance":
        store._table.optimize(cleanup_older_than=timedelta(0))  # count the live version only
        return folder_bytes(scratch / f"v{size}.lance")
    if kind == "postgres":
        with store._connection() as connection:
            row = connection.execute("SELECT pg_total_relation_size(%s)", (f"{store.collection}_windows",)).fetchone()
        return int(row[0])
    return None


def vector_scale(
    size: int,
    queries: int,
    exact_queries: int,
    scratch: Path,
    kind: str = "lance",
    postgres_url: str | None = None,
    ef_searches: Sequence[int] = (),
) -> dict[str, Any]:
    from soundsift.search.stores import WindowRows

    rng = np.random.default_rng(size)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    store = open_bench_store(kind, size, scratch, postgres_url)
    chunk = 100_000
    started = time.perf_counter()
    kept: list[np.ndarray] = []
    for offset in range(0, size, chunk):
        count = min(chunk, size - offset)
        vectors = clustered(count, rng, centres)
        ids = np.arange(offset, offset + count, dtype=np.int64)
        store.add(WindowRows(ids, ids // 100, (ids % 100) * 2.5, (ids % 100) * 2.5 + 5, vectors))
        kept.append(vectors[: max(1, queries // max(1, size // chunk))])
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    store.optimize(ann_threshold=1)
    build_s = time.perf_counter() - started
    sample = np.concatenate(kept)[:queries]
    probes = sample + rng.normal(scale=0.3 / np.sqrt(DIM), size=sample.shape).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    for probe in probes[:3]:  # warm the caches
        store.search(probe, 10)
        store.search(probe, 10, exact=True)
    ann_ms, exact_ms, recall = [], [], []
    truth: list[set[int]] = []
    for index, probe in enumerate(probes):
        started = time.perf_counter()
        approximate = store.search(probe, 10)
        ann_ms.append((time.perf_counter() - started) * 1000)
        if index < exact_queries:
            started = time.perf_counter()
            exact = store.search(probe, 10, exact=True)
            exact_ms.append((time.perf_counter() - started) * 1000)
            truth.append({c.id for c in exact})
            recall.append(len(truth[-1] & {c.id for c in approximate}) / 10)
    pgvector = (
        {
            "ef_search": store.ef_search,
            "ef_search_sweep": [ef_search_point(store, probes, truth, ef) for ef in ef_searches],
        }
        if kind == "postgres"
        else {}
    )
    size_bytes = store_bytes(kind, store, size, scratch)
    if hasattr(store, "drop_collection"):
        store.drop_collection()
    store.close()
    return {
        "store": kind,
        "vectors": size,
        "add_s": round(add_s, 1),
        "ann_build_s": round(build_s, 1),
        "ann_p50_ms": round(statistics.median(ann_ms), 2),
        "ann_p95_ms": round(percentile(ann_ms, 95), 2),
        "exact_p50_ms": round(statistics.median(exact_ms), 2),
        "exact_p95_ms": round(percentile(exact_ms, 95), 2),
        "recall_at_10": round(float(np.mean(recall)), 4),
        "queries": len(ann_ms),
        "exact_queries": len(exact_ms),
        **pgvector,
        "disk_bytes": size_bytes,
        "disk_bytes_per_window": None if size_bytes is None else round(size_bytes / size),
        "disk_mb_per_hour_of_audio": None
        if size_bytes is None
        else round(size_bytes / size * WINDOWS_PER_HOUR / 2**20, 2),
    }


def ef_search_point(store: Any, probes: np.ndarray, truth: list[set[int]], ef_search: int) -> dict[str, float]:
    """pgvector's HNSW at another ef_search, on the same index and probes: latency and recall@10
    against the exact answers already found."""
    default, store.ef_search = store.ef_search, ef_search
    try:
        store.search(probes[0], 10)
        ann_ms, recall = [], []
        for index, probe in enumerate(probes):
            started = time.perf_counter()
            found = {c.id for c in store.search(probe, 10)}
            ann_ms.append((time.perf_counter() - started) * 1000)
            if index < len(truth):
                recall.append(len(truth[index] & found) / 10)
    finally:
        store.ef_search = default
    return {
        "ef_search": ef_search,
        "ann_p50_ms": round(statistics.median(ann_ms), 2),
        "ann_p95_ms": round(percentile(ann_ms, 95), 2),
        "recall_at_10": round(float(np.mean(recall)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="vector counts, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="approximate queries per size")
    parser.add_argument("--exact-queries", type=int, default=50, help="exact queries per size (recall is over these)")
    parser.add_argument("--clips", type=int, default=80, help="ESC-50 clips to index (0: skip the indexing part)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for indexing")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads for indexing")
    parser.add_argument("--model", type=Path, help="model folder (default: the full-size random CLAP)")
    parser.add_argument("--scratch", type=Path, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--stores", default="lance", help="stores to measure: lance, postgres, milvus (comma-separated)"
    )
    parser.add_argument("--postgres", help="PostgreSQL URL (default: start one from the pgserver wheel for the run)")
    parser.add_argument(
        "--pg-maintenance-mb",
        type=int,
        default=4096,
        help="maintenance_work_mem of the PostgreSQL server started for the run (the HNSW graph is built in it)",
    )
    parser.add_argument(
        "--pg-ef-search",
        default="",
        help="also query pgvector's HNSW at these ef_search values (comma-separated), on the same index",
    )
    args = parser.parse_args()
    ef_searches = [int(part) for part in args.pg_ef_search.split(",") if part.strip()]
    stores = [part.strip() for part in args.stores.split(",") if part.strip()]
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="soundsift-search-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {"cpu_count": os.cpu_count(), "threads": args.threads}
    try:
        if args.clips:
            from benchmarks.random_model import full_size_random_model

            model = args.model or full_size_random_model(Path(tempfile.gettempdir()) / "soundsift-clap-random")
            figures["indexing"] = index_speed(args.clips, args.threads, args.workers, model, scratch / "speed")
            print("indexing:", json.dumps(figures["indexing"]), flush=True)
        figures["vectors"] = []
        with ExitStack() as servers:
            postgres_url = args.postgres
            if "postgres" in stores and postgres_url is None:
                from tests.pg_server import postgres_bin, running_postgres

                bin_dir = postgres_bin()
                if bin_dir is None:
                    raise SystemExit("--stores postgres needs --postgres URL or the pgserver wheel (make install-dev)")
                postgres_url = servers.enter_context(running_postgres(bin_dir))
                give_maintenance_memory(postgres_url, args.pg_maintenance_mb)
            for size in (int(part) for part in args.sizes.split(",") if part):
                for kind in stores:
                    (scratch / "vectors").mkdir(exist_ok=True)
                    result = vector_scale(
                        size, args.queries, args.exact_queries, scratch / "vectors", kind, postgres_url, ef_searches
                    )
                    figures["vectors"].append(result)  # type: ignore[attr-defined]
                    print("vectors:", json.dumps(result), flush=True)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
