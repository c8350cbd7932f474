"""Indexing on Ray Data (``--engine ray``): the files to embed mapped over an actor pool, each actor
holding one model and running the same `FileEmbedder` as the local engine on its share of files.

Only vectors travel back to the driver, which writes them through the same catalogue and store
writer as a local run, so resuming, incremental updates and failures behave identically. Locally
Ray starts a private instance; ``address`` joins an existing cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from soundsift.core.classifier import Classifier
from soundsift.core.placement import ray_placement
from soundsift.core.settings import ModelSettings
from soundsift.errors import SoundsiftError
from soundsift.search.embedding import FileEmbedder, FileTask, FileVectors, WindowLayout

FILES_PER_BATCH = 8


class _RemoteError(SoundsiftError):
    """An error raised on an actor, carried back by its code and message."""

    code = "remote_error"

    def __init__(self, code: str, message: str, source: str) -> None:
        super().__init__(message, source=source)
        self.code = code


class _EmbedActor:
    def __init__(self, settings: dict[str, Any], window_s: float, hop_s: float, min_dbfs: float | None) -> None:
        self.classifier = Classifier(ModelSettings.build(**settings))
        self.layout = WindowLayout(window_s, hop_s)
        self.min_dbfs = min_dbfs

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        tasks = [
            FileTask(int(file_id), str(path), str(known) if known else None)
            for file_id, path, known in zip(batch["file_id"], batch["path"], batch["known_sha256"])
        ]
        columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
        for outcome in FileEmbedder(self.classifier, self.layout, workers=1, min_dbfs=self.min_dbfs).run(tasks):
            vectors = np.stack(outcome.vectors).astype(np.float32) if outcome.vectors else np.zeros((0, 0), np.float32)
            for name, value in zip(
                _COLUMNS,
                (
                    outcome.task.file_id,
                    outcome.task.path,
                    outcome.task.known_sha256 or "",
                    outcome.sha256 or "",
                    np.asarray(outcome.starts, dtype=np.float64).tobytes(),
                    np.asarray(outcome.ends, dtype=np.float64).tobytes(),
                    vectors.tobytes(),
                    int(vectors.shape[1]) if vectors.size else 0,
                    outcome.duration_s,
                    outcome.error.code if outcome.error else "",
                    _message(outcome.error) if outcome.error else "",
                    outcome.unchanged,
                    outcome.gated,
                ),
                strict=True,
            ):
                columns[name].append(value)
        return columns


_COLUMNS = (
    "file_id",
    "path",
    "known_sha256",
    "sha256",
    "starts",
    "ends",
    "vectors",
    "dim",
    "duration_s",
    "error_code",
    "error_message",
    "unchanged",
    "gated",
)


def _message(error: SoundsiftError) -> str:
    text = str(error)
    return text.removeprefix(f"{error.source}: ") if error.source else text


def embed_on_ray(
    classifier: Classifier,
    layout: WindowLayout,
    tasks: Sequence[FileTask],
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    min_dbfs: float | None = None,
) -> Iterator[FileVectors]:
    """Each file's outcome as it comes back from the actor pool (order not kept)."""
    settings = classifier.settings
    placement = ray_placement(settings.device, address=address, actors=actors, cpus_per_actor=cpus_per_actor)
    dataset = placement.ray.data.from_items(
        [{"file_id": t.file_id, "path": t.path, "known_sha256": t.known_sha256 or ""} for t in tasks]
    )
    outcomes = dataset.map_batches(
        _EmbedActor,
        batch_size=FILES_PER_BATCH,
        concurrency=min(placement.actors, max(1, len(tasks))),
        num_gpus=placement.gpus_per_actor,
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs={
            "settings": settings.model_dump(),
            "window_s": layout.window_s,
            "hop_s": layout.hop_s,
            "min_dbfs": min_dbfs,
        },
    )
    for batch in outcomes.iter_batches(batch_size=FILES_PER_BATCH, batch_format="numpy"):
        for row in range(len(batch["file_id"])):
            yield _outcome({name: batch[name][row] for name in _COLUMNS})


def _outcome(row: dict[str, Any]) -> FileVectors:
    task = FileTask(int(row["file_id"]), str(row["path"]), str(row["known_sha256"]) or None)
    dim = int(row["dim"])
    vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(-1, dim) if dim else np.zeros((0, 0))
    error = _RemoteError(str(row["error_code"]), str(row["error_message"]), task.path) if row["error_code"] else None
    return FileVectors(
        task=task,
        sha256=str(row["sha256"]) or None,
        starts=np.frombuffer(row["starts"], dtype=np.float64).tolist(),
        ends=np.frombuffer(row["ends"], dtype=np.float64).tolist(),
        vectors=list(vectors),
        duration_s=float(row["duration_s"]),
        error=error,
        unchanged=bool(row["unchanged"]),
        gated=int(row["gated"]),
    )
