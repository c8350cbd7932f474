"""The store contract: every vector store soundsift offers passes this one suite (add, re-add,
delete, search, filters, model refusal, resume after a killed indexing run), against the real
engine: LanceDB and Qdrant's local mode in the folder, a real PostgreSQL 16 server with pgvector
started on 127.0.0.1 (tests/pg_server.py), Milvus Lite's engine. A store is supported when it passes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsift import Classifier, ConfigurationError, Library
from soundsift.search.catalog import FileFilter, glob_regex, path_matches
from soundsift.search.errors import IndexMismatchError, QueryError, StoreUnavailableError
from soundsift.search.stores import ModelStamp, VectorStore, WindowRows, open_store, redact
from tests.data.tiny_clap import build_tiny_clap
from tests.pg_server import PASSWORD, postgres_bin, running_postgres

RATE = 16_000
DIM = 32
# Milvus Lite starts a server process per store (1-2 s a test), so its cases are in the slow tier.
MILVUS_LITE = pytest.param("milvus:local", marks=pytest.mark.slow, id="milvus:local")
STORES = ["lance", "qdrant:local", "postgres", MILVUS_LITE]
# Stores outside the index folder record the model of their vectors themselves.
STAMPING = ["postgres", MILVUS_LITE]
STAMP = ModelStamp("tiny", np.eye(4, DIM).round(6).tolist())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("the pgserver wheel (PostgreSQL with pgvector) is not installed: make install-dev")
    pytest.importorskip("psycopg")
    with running_postgres(bin_dir) as url:
        yield url


def _spec(request: pytest.FixtureRequest, name: str) -> str:
    if name == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    if name.startswith("qdrant"):
        pytest.importorskip("qdrant_client")
    if name.startswith("milvus"):
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    return name


@pytest.fixture(params=STORES)
def store_spec(request: pytest.FixtureRequest) -> str:
    return _spec(request, request.param)


@pytest.fixture(params=STAMPING)
def stamping_spec(request: pytest.FixtureRequest) -> str:
    return _spec(request, request.param)


def _open(spec: str, folder: Path, collection: str, stamp: ModelStamp | None = STAMP) -> VectorStore:
    folder.mkdir(parents=True, exist_ok=True)
    return open_store(spec, folder, DIM, collection, stamp)


def _collection() -> str:
    return f"soundsift_{uuid.uuid4().hex[:12]}"


def _rows(files: int, per_file: int, seed: int = 0) -> WindowRows:
    rng = np.random.default_rng(seed)
    ids = np.arange(files * per_file, dtype=np.int64)
    file_ids = ids // per_file
    centres = rng.normal(size=(files, DIM))
    vectors = centres[file_ids] + 0.6 * rng.normal(size=(len(ids), DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    starts = (ids % per_file) * 2.5
    return WindowRows(file_ids * (1 << 24) + ids % per_file, file_ids, starts, starts + 5.0, vectors)


# ---- the store itself ---------------------------------------------------------------------------


def test_add_search_delete_and_reopen(store_spec: str, tmp_path: Path) -> None:
    collection, rows = _collection(), _rows(20, 10)
    store = _open(store_spec, tmp_path, collection)
    assert store.count() == 0
    store.add(rows)
    assert store.count() == 200
    for n in (0, 57, 199):
        (best,) = store.search(rows.vectors[n], 1, exact=True)
        assert (best.id, best.file_id, best.start_s, best.end_s) == (
            rows.ids[n],
            rows.file_ids[n],
            rows.starts[n],
            rows.ends[n],
        )
        assert best.score == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(best.vector, rows.vectors[n], atol=1e-6)
    found = store.search(rows.vectors[0], 10, exact=True)
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    assert {c.file_id for c in store.search(rows.vectors[0], 15, file_ids={3, 4}, exact=True)} == {3, 4}
    assert store.search(rows.vectors[0], 5, file_ids=set()) == []
    store.delete_files([0, 1])
    assert store.count() == 180
    assert all(c.file_id not in (0, 1) for c in store.search(rows.vectors[0], 30, exact=True))
    store.close()
    again = _open(store_spec, tmp_path, collection)
    assert again.count() == 180  # what was written is kept
    assert again.search(rows.vectors[57], 1, exact=True)[0].id == rows.ids[57]
    again.close()


def test_re_adding_a_file_replaces_its_windows(store_spec: str, tmp_path: Path) -> None:
    store = _open(store_spec, tmp_path, _collection())
    rows = _rows(5, 4)
    store.add(rows)
    fresh = _rows(5, 4, seed=9)
    mask = rows.file_ids == 2
    store.delete_files([2])
    store.add(WindowRows(rows.ids[mask], rows.file_ids[mask], rows.starts[mask], rows.ends[mask], fresh.vectors[mask]))
    assert store.count() == 20
    best = store.search(fresh.vectors[mask][1], 1, exact=True)[0]
    assert best.id == rows.ids[mask][1] and best.score == pytest.approx(1.0, abs=1e-4)
    store.close()


def test_the_approximate_search_keeps_recall(store_spec: str, tmp_path: Path) -> None:
    store = _open(store_spec, tmp_path, _collection())
    rows = _rows(150, 10, seed=3)
    store.add(rows)
    store.optimize(ann_threshold=1000)
    rng = np.random.default_rng(4)
    recalls = []
    for n in rng.choice(len(rows), 20, replace=False):
        query = rows.vectors[n] + 0.05 * rng.normal(size=DIM).astype(np.float32)
        exact = {c.id for c in store.search(query, 10, exact=True)}
        approximate = {c.id for c in store.search(query, 10)}
        recalls.append(len(exact & approximate) / 10)
    assert np.mean(recalls) >= 0.9
    store.close()


def test_another_model_is_refused_by_the_store(stamping_spec: str, tmp_path: Path) -> None:
    collection = _collection()
    _open(stamping_spec, tmp_path, collection).close()
    other = ModelStamp("other", (-np.eye(4, DIM)).round(6).tolist())
    with pytest.raises(IndexMismatchError, match="embeds differently"):
        _open(stamping_spec, tmp_path, collection, other)
    with pytest.raises(IndexMismatchError, match="dimension"):
        open_store(stamping_spec, tmp_path, DIM * 2, collection, STAMP)
    _open(stamping_spec, tmp_path, collection).close()  # the right model still opens it


# ---- through the Library: incremental indexing, filters, models, a killed run ---------------------


def _clip(seed: int, seconds: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * (150 + 90 * seed) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.2 * seed) * t))
    return (0.2 * tone + rng.normal(0, 0.02 + 0.01 * seed, len(t))).astype(np.float32)


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    """Four 5 s clips (two in sub/) and one 20 s recording: 4 + 7 windows."""
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    for seed in range(4):
        soundfile.write(folder / ("sub" if seed % 2 else ".") / f"clip{seed}.wav", _clip(seed), RATE)
    soundfile.write(folder / "long.flac", np.concatenate([_clip(10 + part) for part in range(4)]), RATE)
    os.utime(folder / "clip0.wav", (1_000_000_000, 1_000_000_000))  # 2001: the date filter's old file
    return folder


def test_incremental_indexing_and_filters(
    store_spec: str, tmp_path: Path, classifier: Classifier, recordings: Path
) -> None:
    library = Library(tmp_path / "index", classifier=classifier, store=store_spec)
    first = library.add([recordings])
    assert (first.added, first.windows_added, first.failed) == (5, 11, [])
    assert library.add([recordings]).unchanged == 5
    clip = recordings / "sub" / "clip1.wav"
    assert library.search(like=str(clip), top=1).hits[0].path == str(clip.resolve())

    soundfile.write(recordings / "clip2.wav", _clip(40), RATE)  # changed content
    touched = recordings / "sub" / "clip3.wav"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    second = library.add([recordings])
    assert (second.changed, second.touched, second.unchanged) == (1, 1, 3)
    assert library.search(like=str(recordings / "clip2.wav"), top=1).hits[0].path.endswith("clip2.wav")

    clip.unlink()
    third = library.add([recordings])
    assert third.removed == 1
    result = library.search(text="rain", top=50)
    assert result.windows_searched == library.status().windows == 10
    assert str(clip.resolve()) not in {hit.path for hit in result.hits}

    def files(**rule: object) -> set[str]:
        return {Path(hit.path).name for hit in library.search(text="rain", top=50, **rule).hits}  # type: ignore[arg-type]

    assert files(path_glob="*/sub/*") == {"clip3.wav"}
    assert files(path_glob="clip?.wav") == {"clip0.wav", "clip2.wav", "clip3.wav"}
    assert files(min_duration_s=10) == {"long.flac"}
    assert files(max_duration_s=10) == {"clip0.wav", "clip2.wav", "clip3.wav"}
    assert files(modified_before=1_000_000_001) == {"clip0.wav"}
    assert files(modified_after=1_000_000_001, path_glob="*.wav") == {"clip2.wav", "clip3.wav"}
    assert files(path_glob="*.mp3") == set()
    library.close()


def test_an_index_of_another_model_is_refused(
    store_spec: str, tmp_path: Path, classifier: Classifier, recordings: Path
) -> None:
    library = Library(tmp_path / "index", classifier=classifier, store=store_spec)
    library.add([recordings / "sub"])
    library.close()
    other = Library(tmp_path / "index", model=str(build_tiny_clap(tmp_path / "other", seed=7)), device="cpu")
    with pytest.raises(IndexMismatchError, match="embeds differently"):
        other.add([recordings])
    with pytest.raises(IndexMismatchError):
        other.search(text="rain")
    other.close()


KILLED_RUN = """
import os, signal, sys
from soundsift import Library
from soundsift.search import indexer

indexer.FLUSH_WINDOWS = 1  # one flush per file
flushes = 0
real_flush = indexer.Writer.flush

def flush(self):
    # The third flush dies between writing its windows to the store and recording them in the
    # catalogue: the worst moment, which leaves windows of a file the catalogue has as pending.
    global flushes
    flushes += 1
    if flushes == 3 and self._done:
        real_add = self.store.add
        def add_then_die(rows):
            real_add(rows)
            os.kill(os.getpid(), signal.SIGKILL)
        self.store.add = add_then_die
    real_flush(self)

indexer.Writer.flush = flush
model, store, index, folder = sys.argv[1:]
Library(index, model=model, device="cpu", store=store).add([folder], workers=1)
"""


@pytest.mark.slow  # a subprocess that loads the model, per store
def test_a_killed_indexing_run_resumes(
    store_spec: str, tmp_path: Path, classifier: Classifier, tiny_model_dir: Path, recordings: Path
) -> None:
    index = tmp_path / "index"
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(KILLED_RUN),
            str(tiny_model_dir),
            store_spec,
            str(index),
            str(recordings),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    library = Library(index, classifier=classifier, store=store_spec)
    status = library.status()
    assert status.files_indexed == 2 and status.files_pending == 3
    _, store = library._ready(create=False)
    assert store.count() > status.windows  # the killed flush's windows reached the store
    report = library.add([recordings])
    assert (report.resumed, report.failed, report.interrupted) == (3, [], False)
    status = library.status()
    assert (status.files_pending, status.files_indexed, status.windows) == (0, 5, 11)
    assert store.count() == 11  # nothing twice, nothing half
    for clip in sorted(recordings.rglob("*.wav")):
        assert library.search(like=str(clip), top=1).hits[0].path == str(clip.resolve())
    library.close()


# ---- PostgreSQL: credentials, schema, filters in SQL -----------------------------------------------


def test_postgres_credentials_are_never_stored_or_shown(
    postgres_url: str, tmp_path: Path, classifier: Classifier, recordings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = Library(tmp_path / "index", classifier=classifier, store=postgres_url)
    library.add([recordings / "sub"])
    _, store = library._ready(create=False)
    status = library.status()
    assert status.store == redact(postgres_url) and PASSWORD not in status.store
    assert PASSWORD not in repr(store)
    library.close()
    assert PASSWORD.encode() not in (tmp_path / "index" / "catalog.sqlite").read_bytes()
    # Later runs take the password from libpq's environment (PGPASSWORD), not from the manifest.
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    assert Library(tmp_path / "index", classifier=classifier).search(text="rain", top=3).hits
    monkeypatch.delenv("PGPASSWORD")
    wrong = postgres_url.replace(PASSWORD, "not-the-password")
    with pytest.raises(StoreUnavailableError, match="authentication failed") as refused:
        open_store(wrong, tmp_path, DIM, _collection(), STAMP)
    assert "not-the-password" not in str(refused.value)
    # A refused first run leaves no index naming that store: the right URL then just works.
    fresh = Library(tmp_path / "fresh", classifier=classifier, store=wrong)
    with pytest.raises(StoreUnavailableError) as refused:
        fresh.add([recordings / "sub"])
    assert "not-the-password" not in str(refused.value)
    fresh.close()
    assert Library(tmp_path / "fresh", classifier=classifier).manifest() is None
    assert Library(tmp_path / "fresh", classifier=classifier, store=postgres_url).add([recordings / "sub"]).added == 2


def test_postgres_schema_is_versioned_and_a_newer_one_refused(postgres_url: str, tmp_path: Path) -> None:
    import psycopg

    _open(postgres_url, tmp_path, _collection()).close()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert connection.execute("SELECT version FROM soundsift_schema").fetchall() == [(1,)]
        assert connection.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'").fetchone()
        connection.execute("UPDATE soundsift_schema SET version = 99")
    try:
        with pytest.raises(IndexMismatchError, match="upgrade soundsift"):
            _open(postgres_url, tmp_path, _collection())
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute("UPDATE soundsift_schema SET version = 1")


def test_postgres_filters_run_in_sql_and_use_hnsw(
    postgres_url: str, tmp_path: Path, classifier: Classifier, recordings: Path
) -> None:
    library = Library(tmp_path / "index", classifier=classifier, store=postgres_url, ann_threshold=5)
    library.add([recordings])
    manifest, store = library._ready(create=False)
    assert store.holds_files and store.has_ann_index()  # built at the end of the run, past 5 windows
    vector = store.search(np.full(manifest.dim, manifest.dim**-0.5), 1, exact=True)[0].vector
    for rule in (
        FileFilter(path_glob="*/sub/*"),
        FileFilter(min_duration_s=10),
        FileFilter(modified_before=1_000_000_001),
        FileFilter(path_glob="clip[02].wav", max_duration_s=6),
    ):
        in_sql = {c.file_id for c in store.search(vector, 50, rule=rule)}
        by_catalog = library.catalog.matching_ids(rule)
        assert in_sql == by_catalog and in_sql
    library.close()


def test_postgres_ef_search_is_an_index_setting(
    postgres_url: str, tmp_path: Path, classifier: Classifier, recordings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ef_search`` (``index --ef-search``) reaches the store, stays in the manifest for later runs
    (another value replaces it) and is capped at pgvector's 1000 however many hits a search asks."""
    library = Library(tmp_path / "index", classifier=classifier, store=postgres_url, ann_threshold=5, ef_search=300)
    library.add([recordings])
    _, store = library._ready(create=False)
    assert store.ef_search == 300 and store.has_ann_index()
    library.close()
    retuned = Library(tmp_path / "index", classifier=classifier, ef_search=40)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # later runs: the manifest's URL, the password from libpq's env
    assert retuned.search(text="rain", top=2).hits
    retuned.close()
    later = Library(tmp_path / "index", classifier=classifier)
    _, store = later._ready(create=False)
    assert store.ef_search == 40
    # 300 hits fetch 1500 candidates: the HNSW scan is asked for 1000, pgvector's most, not 3000.
    # (Repeated: a connection checks the setting only once pgvector is loaded in it.)
    for _ in range(3):
        assert later.search(text="rain", top=300).hits
    later.close()


def test_ef_search_out_of_range_or_on_another_store_is_refused(tmp_path: Path, classifier: Classifier, run) -> None:
    with pytest.raises(QueryError, match="between 1 and 1000"):
        Library(tmp_path / "a", classifier=classifier, ef_search=0)
    lance = Library(tmp_path / "b", classifier=classifier, ef_search=100)
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        lance.add([tmp_path])
    lance.close()
    assert Library(tmp_path / "b", classifier=classifier).manifest() is None  # no index left behind
    code, _, err = run("index", str(tmp_path), "--index", str(tmp_path / "c"), "--ef-search", "5000")
    assert code != 0 and "between 1 and 1000" in err


def test_glob_regex_matches_like_path_matches() -> None:
    paths = ["/a/sub/clip1.wav", "/a/clip0.wav", "/x/y/long.flac", "/a/b[1].wav", "/a/s.t.wav", "/a/(x)+.wav"]
    patterns = ["*/sub/*", "*.wav", "clip?.wav", "long.*", "/a/*", "[!c]*.wav", "s.t.wav", "*[0-9].wav", "(x)+.wav"]
    for pattern in patterns:
        for path in paths:
            assert bool(re.search(glob_regex(pattern), path)) == path_matches(path, pattern), (pattern, path)


def test_store_specs_keep_no_secret() -> None:
    assert redact("postgresql://me:pw@db:5432/sound?password=pw&sslmode=require") == (
        "postgresql://me@db:5432/sound?sslmode=require"
    )
    assert redact("milvus://root:Milvus@host:19530") == "milvus://root@host:19530"
    # Passwords a URL parser would cut short ('#' starts a fragment, '/' a path, '?' a query) are
    # removed whole, and the rest of the query is kept as written (blank values too).
    for password in ("se#cret", "pa/ss", "s3cr?tX", "p@ss"):
        assert redact(f"postgresql://me:{password}@db/x") == "postgresql://me@db/x"
    assert redact("postgresql://me@db/x?options=-c%20a%3D1&host=&Password=pw") == (
        "postgresql://me@db/x?options=-c%20a%3D1&host="
    )
    assert redact("lance") == "lance"
    with pytest.raises(Exception, match="unknown store") as unknown:
        Library("/tmp/x", store="mysql://me:pw@db/x")
    assert "pw" not in str(unknown.value)


# ---- moving an index: export-index, index --from-parquet ------------------------------------------


def test_an_exported_index_loads_into_the_store(
    store_spec: str, tmp_path: Path, classifier: Classifier, recordings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    from soundsift.cli.main import main

    source = Library(tmp_path / "lance-index", classifier=classifier)
    source.add([recordings])
    source.close()
    out = tmp_path / "windows.parquet"
    assert main(["export-index", "--index", str(tmp_path / "lance-index"), "--out", str(out)]) == 0
    assert "11 windows of 5 files" in capsys.readouterr().out
    exported = pq.read_table(out)
    assert exported.column_names[:5] == ["path", "start_s", "end_s", "vector", "model"]
    assert exported.num_rows == 11 and set(exported.column("model").to_pylist()) == {classifier.model_id}

    moved = Library(tmp_path / "moved", classifier=classifier, store=store_spec)
    report = moved.load_parquet(out)
    assert (report.added, report.windows_added) == (5, 11)
    assert moved.status().windows == 11
    clip = recordings / "sub" / "clip1.wav"
    assert moved.search(like=str(clip), top=1).hits[0].path == str(clip.resolve())
    assert moved.add([recordings]).unchanged == 5  # size, mtime and hash came along: nothing re-embedded
    again = tmp_path / "again.parquet"
    moved.export_parquet(again)
    back = pq.read_table(again)
    assert back.column("path").to_pylist() == exported.column("path").to_pylist()
    assert back.column("start_s").to_pylist() == exported.column("start_s").to_pylist()
    np.testing.assert_allclose(
        np.array(back.column("vector").to_pylist()), np.array(exported.column("vector").to_pylist()), atol=1e-6
    )
    assert moved.load_parquet(out).changed == 5  # loading again replaces, never duplicates
    assert moved.status().windows == 11
    moved.close()
    other = Library(tmp_path / "other", model=str(build_tiny_clap(tmp_path / "m7", seed=7)), device="cpu")
    with pytest.raises(IndexMismatchError, match="embeds differently"):
        other.load_parquet(out)


def test_index_from_parquet_on_the_command_line(tmp_path: Path, classifier: Classifier, recordings: Path, run) -> None:
    with Library(tmp_path / "source", classifier=classifier) as source:
        source.add([recordings])
        source.export_parquet(tmp_path / "w.parquet")
    code, out, _ = run("index", "--from-parquet", str(tmp_path / "w.parquet"), "--index", str(tmp_path / "new"))
    assert code == 0 and "5 added" in out and "11 windows" in out
    code, _, err = run("index", str(recordings), "--from-parquet", str(tmp_path / "w.parquet"), "--index", "x")
    assert code == 2 and "one or the other" in err
    code, _, err = run("index", "--from-parquet", str(recordings / "clip0.wav"), "--index", str(tmp_path / "n2"))
    assert code == 2 and "not a Parquet file" in err
    code, out, _ = run("index", "--status", "--index", str(tmp_path / "new"))
    assert "5 files, 11 windows" in out
