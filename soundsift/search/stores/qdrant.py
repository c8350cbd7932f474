"""Vectors in Qdrant: a server or cluster given by URL, or qdrant-client's embedded local mode.

The server builds and maintains its HNSW index itself (and shards and replicates across a cluster
when the collection is made so); below ``ann_threshold`` windows searches ask it for exact results.
The API key, if the server needs one, comes from SOUNDSIFT_QDRANT_API_KEY and is never written to
the index folder. The local mode searches by brute force and suits small indexes and tests only.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.optional import QDRANT
from soundsift.search.catalog import FileFilter
from soundsift.search.stores import Candidate, StoredFile, WindowRows

API_KEY_ENV = "SOUNDSIFT_QDRANT_API_KEY"
UPSERT_BATCH = 512
HNSW_EF_MIN = 128


class QdrantStore:
    kind = "qdrant"
    holds_files = False

    def __init__(self, target: str, local_path: Path, dim: int, collection: str) -> None:
        qdrant_client = QDRANT.require("a Qdrant search index")
        self.models = qdrant_client.models
        self.dim, self.collection = dim, collection
        self.local = target == "local"
        if self.local:
            self._client = qdrant_client.QdrantClient(path=str(local_path))
        else:
            self._client = qdrant_client.QdrantClient(url=target, api_key=os.environ.get(API_KEY_ENV) or None)
        if not self._client.collection_exists(collection):
            self._client.create_collection(
                collection, vectors_config=self.models.VectorParams(size=dim, distance=self.models.Distance.DOT)
            )
            if not self.local:  # filters by file stay fast on a large server collection
                self._client.create_payload_index(
                    collection, field_name="file_id", field_schema=self.models.PayloadSchemaType.INTEGER
                )

    def count(self) -> int:
        return int(self._client.count(self.collection, exact=True).count)

    def add(self, rows: WindowRows) -> None:
        for start in range(0, len(rows), UPSERT_BATCH):
            end = start + UPSERT_BATCH
            self._client.upsert(
                self.collection,
                points=self.models.Batch(
                    ids=[int(i) for i in rows.ids[start:end]],
                    vectors=rows.vectors[start:end].astype(np.float32).tolist(),
                    payloads=[
                        {"file_id": int(f), "start_s": float(s), "end_s": float(e)}
                        for f, s, e in zip(rows.file_ids[start:end], rows.starts[start:end], rows.ends[start:end])
                    ],
                ),
                wait=True,
            )

    def _files_filter(self, file_ids: Collection[int]) -> Any:
        models = self.models
        return models.Filter(
            must=[models.FieldCondition(key="file_id", match=models.MatchAny(any=[int(f) for f in file_ids]))]
        )

    def delete_files(self, file_ids: Sequence[int]) -> None:
        for start in range(0, len(file_ids), 1000):
            self._client.delete(
                self.collection,
                points_selector=self.models.FilterSelector(filter=self._files_filter(file_ids[start : start + 1000])),
                wait=True,
            )

    def describe_files(self, files: Sequence[StoredFile]) -> None:
        """Nothing to keep: the catalogue filters files for this store."""

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        file_ids: Collection[int] | None = None,
        rule: FileFilter | None = None,
        exact: bool = False,
    ) -> list[Candidate]:
        if rule is not None:
            raise ValueError("this store holds no file columns: filter by file_ids")
        if file_ids is not None and not file_ids:
            return []
        found = self._client.query_points(
            self.collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            limit=k,
            query_filter=self._files_filter(file_ids) if file_ids is not None else None,
            with_vectors=True,
            with_payload=True,
            # Local mode always compares every vector (and warns about any search parameters).
            search_params=None
            if self.local
            else self.models.SearchParams(exact=exact, hnsw_ef=max(HNSW_EF_MIN, 2 * k)),
        ).points
        return [
            Candidate(
                int(point.id),
                int(point.payload["file_id"]),
                float(point.payload["start_s"]),
                float(point.payload["end_s"]),
                float(point.score),
                np.asarray(point.vector, dtype=np.float32),
            )
            for point in found
        ]

    def windows_of(self, file_ids: Sequence[int]) -> WindowRows:
        points: list[Any] = []
        offset = None
        while len(file_ids):
            page, offset = self._client.scroll(
                self.collection,
                scroll_filter=self._files_filter(file_ids),
                limit=UPSERT_BATCH,
                offset=offset,
                with_vectors=True,
                with_payload=True,
            )
            points += page
            if offset is None:
                break
        points.sort(key=lambda point: int(point.id))
        if not points:
            return WindowRows.concat([], self.dim)
        return WindowRows(
            np.array([int(p.id) for p in points], dtype=np.int64),
            np.array([int(p.payload["file_id"]) for p in points], dtype=np.int64),
            np.array([float(p.payload["start_s"]) for p in points]),
            np.array([float(p.payload["end_s"]) for p in points]),
            np.array([p.vector for p in points], dtype=np.float32),
        )

    def has_ann_index(self) -> bool:
        if self.local:
            return False
        info = self._client.get_collection(self.collection)
        return bool(info.indexed_vectors_count)

    def optimize(self, ann_threshold: int) -> None:
        """Nothing to do: the server indexes by itself; local mode has no index."""

    def close(self) -> None:
        self._client.close()
