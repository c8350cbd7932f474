"""`Library`: an index folder of recordings, searched by text or by example.

    lib = Library("~/sound-index")                  # laion/clap-htsat-fused unless the index says
    lib.add(["~/recordings"])                       # incremental: new and changed files only
    for hit in lib.search(text="door slamming -music", top=10).hits:
        print(hit.path, hit.start_s, hit.end_s, hit.score)
    lib.search(like="example.wav", like_start_s=3, like_end_s=8)

The folder holds ``catalog.sqlite`` (manifest and one row per file) and the vector store
(``vectors.lance`` by default). The manifest records the model, its embedding fingerprint and the
window layout; an index is only ever searched and extended with the model that built it.
"""

from __future__ import annotations

import fcntl
import glob
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from soundsift.core.adapter import Adapter
from soundsift.core.audio import AudioInput
from soundsift.core.classifier import Classifier
from soundsift.core.fingerprint import same_model
from soundsift.errors import ConfigurationError
from soundsift.search.catalog import FORMAT_VERSION, Catalog, FileFilter
from soundsift.search.embedding import (
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    FileEmbedder,
    FileTask,
    FileVectors,
    WindowLayout,
)
from soundsift.search.errors import IndexBusyError, IndexMismatchError, IndexNotFoundError, QueryError
from soundsift.search.indexer import Plan, Writer, plan_run
from soundsift.search.query import (
    QueryVectors,
    example_query,
    fetch_size,
    merge_adjacent,
    pool_candidates,
    text_query,
)
from soundsift.search.results import FileProblem, IndexReport, IndexStatus, SearchHit, SearchResult
from soundsift.search.stores import (
    DEFAULT_STORE,
    EF_SEARCH_RANGE,
    ModelStamp,
    VectorStore,
    check_store_spec,
    open_store,
    redact,
    store_kind,
)

# Below this many windows every search compares every window; above it an approximate index is
# built. Exact search in LanceDB costs about 3 ms per 1,000 512-d windows on 2 cores (293 ms p50 at
# 100k) against 13 ms for the IVF-PQ index at recall@10 1.0, and the index builds in 26 s at 100k:
# at 20k windows (about 14 hours of audio) exact search is still ~60 ms. docs/search.md.
DEFAULT_ANN_THRESHOLD = 20_000
LOCK_NAME = "lock"
Progress = Callable[[int, int], None]
"""Called with (files finished, files to do) as an indexing run goes."""


@dataclass(frozen=True)
class _Manifest:
    model: str
    dim: int
    fingerprint: list[Any]
    window_s: float
    hop_s: float
    store: str
    ann_threshold: int
    roots: list[str]
    ef_search: int | None = None


class Library:
    """An index of recordings in ``folder``. Keywords other than those below are
    `soundsift.core.settings.ModelSettings` fields (``device``, ``backend``, ``batch_size``...);
    ``classifier`` passes one already loaded instead (the server does)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        model: str | None = None,
        classifier: Classifier | None = None,
        store: str | None = None,
        window_s: float | None = None,
        hop_s: float | None = None,
        ann_threshold: int | None = None,
        ef_search: int | None = None,
        **model_settings: Any,
    ) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if self.folder.exists() and not self.folder.is_dir():
            raise QueryError(f"the index {self.folder} is a file, not a folder: name a folder (new or an index)")
        self._model, self._model_settings = model, model_settings
        self._classifier = classifier
        self._store_spec = check_store_spec(store) if store is not None else None
        self._layout_given = window_s is not None or hop_s is not None
        if window_s is not None and not 0.5 <= window_s <= 60:
            raise QueryError(f"window_s must be between 0.5 and 60 s, not {window_s}")
        if hop_s is not None and not 0.1 <= hop_s <= (window_s or DEFAULT_WINDOW_S):
            raise QueryError(f"hop_s must be between 0.1 s and the window length, not {hop_s}")
        if ef_search is not None and not EF_SEARCH_RANGE[0] <= ef_search <= EF_SEARCH_RANGE[1]:
            raise QueryError(
                f"ef_search must be between {EF_SEARCH_RANGE[0]} and {EF_SEARCH_RANGE[1]}, not {ef_search}"
            )
        self._window_s, self._hop_s, self._ann_threshold = window_s, hop_s, ann_threshold
        self._ef_search = ef_search
        self._catalog: Catalog | None = None
        self._store: VectorStore | None = None
        self._checked = False
        self._open_lock = threading.Lock()

    # ---- opening --------------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.folder / "catalog.sqlite").is_file()

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._catalog = Catalog(self.folder)
        return self._catalog

    def manifest(self) -> _Manifest | None:
        if not self.exists:
            return None
        values = self.catalog.manifest()
        if "model" not in values:
            return None
        return _Manifest(
            model=values["model"],
            dim=int(values["dim"]),
            fingerprint=list(values["fingerprint"]),
            window_s=float(values["window_s"]),
            hop_s=float(values["hop_s"]),
            store=str(values.get("store", DEFAULT_STORE)),
            ann_threshold=int(values.get("ann_threshold", DEFAULT_ANN_THRESHOLD)),
            roots=list(values.get("roots", [])),
            ef_search=int(values["ef_search"]) if values.get("ef_search") is not None else None,
        )

    @property
    def classifier(self) -> Classifier:
        """The model of this index (loaded on first use: the one the manifest names, unless given)."""
        if self._classifier is None:
            manifest = self.manifest()
            model = self._model or (manifest.model if manifest else None)
            settings = dict(self._model_settings)
            if model is not None:
                settings["model"] = model
            self._classifier = Classifier(**settings)
        return self._classifier

    @property
    def layout(self) -> WindowLayout:
        manifest = self.manifest()
        if manifest is not None:
            return WindowLayout(manifest.window_s, manifest.hop_s)
        return WindowLayout(self._window_s or DEFAULT_WINDOW_S, self._hop_s or DEFAULT_HOP_S)

    def _ready(self, *, create: bool) -> tuple[_Manifest, VectorStore]:
        """The manifest (written when ``create`` and there is none) and the open store, after
        checking that this library's model is the index's model."""
        with self._open_lock:
            manifest = self.manifest()
            if manifest is None:
                if not create:
                    raise IndexNotFoundError(
                        f"{self.folder} holds no index yet: run 'soundsift index PATH --index DIR'"
                    )
                # The store is opened (a database server reached) before the manifest is written:
                # a wrong URL or a refused password leaves no index behind naming that store.
                manifest = self._new_manifest()
                if self._store is None:
                    self._store = self._open_store(manifest)
                self.catalog.set_manifest({"format": FORMAT_VERSION, **manifest.__dict__})
            elif not self._checked:
                self._check_model(manifest)
            self._checked = True
            if self._store is None:
                self._store = self._open_store(manifest)
            return manifest, self._store

    def _open_store(self, manifest: _Manifest) -> VectorStore:
        """The manifest's store. The manifest holds the spec without secrets; the spec given to this
        Library (with a password, say) is used when it names the same store."""
        spec = manifest.store
        if self._store_spec is not None and redact(self._store_spec) == manifest.store:
            spec = self._store_spec
        current = self.manifest() or manifest  # the fingerprint as _check_model may have renewed it
        stamp = ModelStamp(current.model, current.fingerprint)
        ef_search = self._ef_search or current.ef_search
        if ef_search is not None and store_kind(spec) != "postgres":
            raise ConfigurationError(
                f"ef_search tunes PostgreSQL's HNSW search; {manifest.store!r} has no such setting"
            )
        return open_store(
            spec, self.folder, manifest.dim, collection=self._collection(), stamp=stamp, ef_search=ef_search
        )

    def _collection(self) -> str:
        values = self.catalog.manifest()
        name = values.get("collection")
        if not name:
            name = f"soundsift_{os.urandom(6).hex()}"
            self.catalog.set_manifest({"collection": name})
        return str(name)

    def _new_manifest(self) -> _Manifest:
        classifier = self.classifier
        layout = self.layout
        manifest = _Manifest(
            model=classifier.model_id,
            dim=classifier.dim,
            fingerprint=_rounded(classifier.fingerprint()),
            window_s=layout.window_s,
            hop_s=layout.hop_s,
            store=redact(self._store_spec) if self._store_spec else DEFAULT_STORE,
            ann_threshold=self._ann_threshold or DEFAULT_ANN_THRESHOLD,
            roots=[],
            ef_search=self._ef_search,
        )
        return manifest

    def _check_model(self, manifest: _Manifest) -> None:
        classifier = self.classifier
        stored = manifest.fingerprint
        if _is_legacy_probe(stored) and manifest.model == classifier.model_id:
            # Indexes made before the one fingerprint probe hold a single-probe vector: trusted by
            # model name this once, then given today's fingerprint.
            stored = _rounded(classifier.fingerprint())
            self.catalog.set_manifest({"fingerprint": stored})
        if not same_model(np.asarray(stored), classifier.fingerprint()):
            raise IndexMismatchError(
                f"{self.folder} was built with {manifest.model}; {classifier.model_id} embeds differently, and "
                "vectors of two models cannot be compared. Use the index's model, or a new --index folder."
            )
        if self._layout_given and (
            (self._window_s is not None and self._window_s != manifest.window_s)
            or (self._hop_s is not None and self._hop_s != manifest.hop_s)
        ):
            raise IndexMismatchError(
                f"{self.folder} uses {manifest.window_s} s windows every {manifest.hop_s} s; a different layout "
                "needs a new index folder"
            )
        if self._store_spec is not None and redact(self._store_spec) != manifest.store:
            raise IndexMismatchError(
                f"{self.folder} keeps its vectors in {manifest.store!r}, not {redact(self._store_spec)!r}"
            )
        if self._ann_threshold is not None and self._ann_threshold != manifest.ann_threshold:
            self.catalog.set_manifest({"ann_threshold": self._ann_threshold})
        if self._ef_search is not None and self._ef_search != manifest.ef_search:
            self.catalog.set_manifest({"ef_search": self._ef_search})

    # ---- indexing -------------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | os.PathLike[str]] = (),
        *,
        workers: int = 2,
        retry_failed: bool = False,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        engine: Literal["local", "ray"] = "local",
        ray_address: str | None = None,
        allowed_roots: Sequence[Path] | None = None,
        min_dbfs: float | None = None,
    ) -> IndexReport:
        """Index the audio and video files under ``paths`` (folders recursively): new and changed
        files are embedded, files gone from those folders dropped. No paths: rescan the folders
        indexed before. ``allowed_roots``: every path must resolve inside one (the server's rule).
        ``min_dbfs`` is the silence gate: windows quieter than it are neither embedded nor stored.
        Ctrl-C (or ``stop``) ends the run cleanly: finished files are kept, the rest redone next time."""
        started = time.monotonic()
        given = [os.fspath(Path(path).expanduser()) for path in paths]
        _check_inputs_exist(given)
        if not given and not self.exists:
            raise QueryError("nothing to index: give files or folders")
        with self._exclusive():
            manifest, store = self._ready(create=True)
            inputs = given or manifest.roots
            if not inputs:
                raise QueryError("nothing to index: give files or folders")
            plan = plan_run(self.catalog, inputs, retry_failed=retry_failed, allowed_roots=allowed_roots)
            report = IndexReport(
                files_seen=plan.seen, unchanged=plan.unchanged, failed=list(plan.problems), unreadable=plan.unreadable
            )
            self._remember_roots(manifest, plan)
            writer = Writer(self.catalog, store, plan, report, manifest.dim)
            writer.remove_gone()
            done, stop = 0, stop or threading.Event()
            if progress is not None:
                progress(0, len(plan.tasks))
            try:
                for outcome in self._embed(plan, engine, workers, stop, ray_address, min_dbfs):
                    writer.accept(outcome)
                    done += 1
                    if progress is not None:
                        progress(done, len(plan.tasks))
                    if stop.is_set():
                        break
            except KeyboardInterrupt:
                report.interrupted = True
                stop.set()
            finally:
                writer.flush()
            report.interrupted = report.interrupted or stop.is_set()
            if not report.interrupted:
                store.optimize(self._ann_threshold or manifest.ann_threshold)
        report.wall_s = round(time.monotonic() - started, 3)
        return report

    def _embed(
        self,
        plan: Plan,
        engine: str,
        workers: int,
        stop: threading.Event,
        ray_address: str | None,
        min_dbfs: float | None,
    ) -> Iterator[FileVectors]:
        if not plan.tasks:
            return iter(())
        if engine == "ray":
            from soundsift.search.ray_index import embed_on_ray

            return embed_on_ray(self.classifier, self.layout, plan.tasks, address=ray_address, min_dbfs=min_dbfs)
        if engine != "local":
            raise QueryError(f"unknown engine {engine!r}: use 'local' or 'ray'")
        embedder = FileEmbedder(self.classifier, self.layout, workers=workers, stop=stop, min_dbfs=min_dbfs)
        return embedder.run(plan.tasks)

    def _remember_roots(self, manifest: _Manifest, plan: Plan) -> None:
        roots = list(dict.fromkeys([*manifest.roots, *plan.folders]))
        if roots != manifest.roots:
            self.catalog.set_manifest({"roots": roots})

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One indexing run at a time per folder (searches may run beside it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_NAME, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusyError(f"another indexing run is using {self.folder}; wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---- moving an index ------------------------------------------------------------------------

    def export_parquet(self, out: str | os.PathLike[str]) -> tuple[int, int]:
        """Write every indexed window (path, start, end, vector, model) to a Parquet file; returns
        (files, windows). Needs no model: the manifest's fingerprint goes into the file."""
        from soundsift.search.transfer import ExportHeader, export_index

        manifest = self.manifest()
        if manifest is None:
            raise IndexNotFoundError(f"{self.folder} holds no index yet: nothing to export")
        _, store = self._ready_store_only(manifest)
        header = ExportHeader(manifest.model, manifest.dim, manifest.fingerprint, manifest.window_s, manifest.hop_s)
        return export_index(self.catalog, store, header, Path(out))

    def load_parquet(self, source: str | os.PathLike[str]) -> IndexReport:
        """Load a file written by ``export_parquet`` into this index (created with the file's model
        and window layout when new; any store). Files it holds replace what the index held of them."""
        from soundsift.search.transfer import load_index, read_header

        started, path = time.monotonic(), Path(source).expanduser()
        if not path.is_file():
            raise QueryError(f"no such file: {path}")
        header = read_header(path)
        if self.manifest() is None:
            self._model = self._model or header.model
            self._window_s, self._hop_s = header.window_s, header.hop_s
        layout = self.layout
        if (layout.window_s, layout.hop_s) != (header.window_s, header.hop_s):
            raise IndexMismatchError(
                f"{path} has {header.window_s} s windows every {header.hop_s} s; {self.folder} uses "
                f"{layout.window_s} s every {layout.hop_s} s"
            )
        header.check(self.classifier.model_id, self.classifier.fingerprint(), str(path))
        with self._exclusive():
            manifest, store = self._ready(create=True)
            report = load_index(self.catalog, store, path, manifest.dim)
            store.optimize(self._ann_threshold or manifest.ann_threshold)
        report.wall_s = round(time.monotonic() - started, 3)
        return report

    # ---- searching ------------------------------------------------------------------------------

    def search(
        self,
        text: str | None = None,
        *,
        like: AudioInput | None = None,
        like_start_s: float | None = None,
        like_end_s: float | None = None,
        like_name: str | None = None,
        top: int = 20,
        exclude: Sequence[str] = (),
        path_glob: str | None = None,
        min_duration_s: float | None = None,
        max_duration_s: float | None = None,
        modified_after: float | None = None,
        modified_before: float | None = None,
        exact: bool | None = None,
        merge_gap_s: float = 0.0,
        adapter: Adapter | None = None,
    ) -> SearchResult:
        """The ``top`` best places for a description (``text``) or an example sound (``like``, a
        path, bytes, file object or (samples, rate); ``like_start_s``/``like_end_s`` cut a span of
        it). ``exclude`` lists sounds a hit must not be more like than the query (as '-music' in the
        text). Filters: a path glob, the file's duration, its modified time (Unix seconds).
        ``exact``: None picks exact search below the ANN threshold, approximate above it. With an
        ``adapter`` (or a classifier that has one), a description naming a taught label is searched
        (and its hits ranked) with what the adapter learnt from the user's clips."""
        if (text is None) == (like is None):
            raise QueryError("search by text or by example (like=...), one of the two")
        self._ready(create=False)
        if text is not None:
            taught = self.classifier.checked_adapter(adapter) if adapter is not None else self.classifier.adapter
            query = text_query(self.classifier, text, exclude=exclude, adapter=taught)
        else:
            assert like is not None
            query = example_query(
                self.classifier,
                like,
                self.layout,
                start_s=like_start_s,
                end_s=like_end_s,
                exclude=exclude,
                source=like_name,
            )
        rule = FileFilter(path_glob, min_duration_s, max_duration_s, modified_after, modified_before)
        result = self.search_vectors(query, top=top, rule=rule, exact=exact, merge_gap_s=merge_gap_s)
        result.query = text
        if like is not None:
            result.example = like_name or (str(like) if isinstance(like, str | os.PathLike) else "<audio>")
        if query.prepared is not None:
            result.translated_as = list(query.prepared.translated_as)
            result.excluded = sorted({e for label in query.prepared.classes for e in label.exclusions})
            result.warnings = list(query.prepared.warnings)
        else:
            result.excluded = list(exclude)
        return result

    def search_vectors(
        self,
        query: QueryVectors,
        *,
        top: int = 20,
        rule: FileFilter | None = None,
        exact: bool | None = None,
        merge_gap_s: float = 0.0,
    ) -> SearchResult:
        """The search itself, from query vectors (text and example queries both end here)."""
        manifest, store = self._ready(create=False)
        if query.vectors.shape[1] != manifest.dim:
            raise IndexMismatchError(f"the query has {query.vectors.shape[1]} dimensions; the index {manifest.dim}")
        k = fetch_size(top)
        filtered = rule is not None and rule.active
        # A store that keeps the files' columns filters inside itself (in SQL for PostgreSQL); for
        # the others the catalogue turns the filter into the list of file ids it lets through.
        in_store = rule if filtered and store.holds_files else None
        file_ids = self.catalog.matching_ids(rule) if filtered and in_store is None and rule is not None else None
        use_exact = (not store.has_ann_index()) if exact is None else exact
        found = [store.search(vector, k, file_ids=file_ids, rule=in_store, exact=use_exact) for vector in query.vectors]
        pooled, vetoed = pool_candidates(query, found)
        spans = merge_adjacent(pooled.values(), gap_s=merge_gap_s)[:top]
        rows = self.catalog.rows_by_id(span.file_id for span in spans)
        hits = [
            SearchHit(
                path=rows[span.file_id].path,
                start_s=round(span.start_s, 3),
                end_s=round(span.end_s, 3),
                score=round(span.score, 4),
                best_start_s=round(span.best_start_s, 3),
                best_end_s=round(span.best_end_s, 3),
                windows=span.windows,
                file_id=span.file_id,
                file_duration_s=rows[span.file_id].duration_s,
            )
            for span in spans
            # Not a file deleted by a run beside this search, nor one whose windows a run is writing.
            if span.file_id in rows and rows[span.file_id].status == "indexed"
        ]
        return SearchResult(
            hits=hits,
            exact=use_exact or not store.has_ann_index(),
            vetoed=vetoed,
            model=manifest.model,
            windows_searched=store.count(),
        )

    def file_path(self, file_id: int) -> str | None:
        """The indexed file with this id (the server plays hits back by id, never by path)."""
        row = self.catalog.get_by_id(file_id) if self.exists else None
        return row.path if row is not None and row.status == "indexed" else None

    # ---- status ---------------------------------------------------------------------------------

    def status(self) -> IndexStatus:
        manifest = self.manifest()
        if manifest is None:
            return IndexStatus(path=str(self.folder), exists=False)
        _, store = self._ready_store_only(manifest)
        counts = self.catalog.counts()
        windows, seconds = self.catalog.totals()
        return IndexStatus(
            path=str(self.folder),
            exists=True,
            model=manifest.model,
            dim=manifest.dim,
            window_s=manifest.window_s,
            hop_s=manifest.hop_s,
            store=manifest.store,
            files_indexed=counts.get("indexed", 0),
            files_failed=counts.get("failed", 0),
            files_pending=counts.get("pending", 0),
            windows=windows,
            audio_hours=round(seconds / 3600, 4),
            approximate_index=store.has_ann_index(),
            ann_threshold=manifest.ann_threshold,
            roots=manifest.roots,
            failures=[
                FileProblem(path=row.path, error=row.error_code or "", message=row.error_message or "")
                for row in self.catalog.failures()
            ],
        )

    def _ready_store_only(self, manifest: _Manifest) -> tuple[_Manifest, VectorStore]:
        """The store without loading the model (status needs no model)."""
        with self._open_lock:
            if self._store is None:
                self._store = self._open_store(manifest)
            return manifest, self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


__all__ = ["DEFAULT_ANN_THRESHOLD", "FileTask", "Library"]


def _check_inputs_exist(inputs: Sequence[str]) -> None:
    """Paths the user named must exist (glob patterns may match nothing): checked before an index
    folder is created, so a typo creates nothing."""
    missing = [item for item in inputs if not glob.has_magic(item) and not os.path.lexists(item)]
    if missing:
        raise QueryError(f"no such file or folder: {', '.join(missing[:5])}")


def _rounded(fingerprint: np.ndarray) -> list[Any]:
    """The fingerprint as the manifest stores it (JSON, six decimals)."""
    return np.round(fingerprint.astype(np.float64), 6).tolist()


def _is_legacy_probe(fingerprint: Sequence[Any]) -> bool:
    return bool(fingerprint) and not isinstance(fingerprint[0], list)
