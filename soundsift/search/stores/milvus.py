"""Vectors in Milvus: a server or cluster (``--store milvus://HOST:19530``) or Milvus Lite, its
embedded engine, in one file (``milvus:local`` puts it in the index folder, a path ending in
``.db`` anywhere).

- A server's token (``user:password`` or an API key) comes from SOUNDSIFT_MILVUS_TOKEN, or from
  the URL's user and password, which the manifest and every message leave out.
- The index's collection holds (id, file_id, start_s, end_s, vector); Milvus builds its vector
  index per sealed segment by itself: HNSW on a server (m 16, efConstruction 64, searched with ef at
  least 128), FLAT in Milvus Lite (exact: Lite is for small indexes and tests).
- ``soundsift_models`` records each collection's model, dimension and fingerprint; another model
  is refused. Filters by file go in as ``file_id in [...]`` from the catalogue (Milvus' string
  matching is no shell glob).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from soundsift.errors import ConfigurationError
from soundsift.optional import PYMILVUS
from soundsift.search.catalog import FileFilter
from soundsift.search.errors import IndexMismatchError, StoreUnavailableError
from soundsift.search.stores import USAGE, Candidate, ModelStamp, StoredFile, WindowRows, id_list, redact

TOKEN_ENV = "SOUNDSIFT_MILVUS_TOKEN"
MODELS = "soundsift_models"
INSERT_BATCH = 1000
QUERY_BATCH = 4096
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_MIN = 16, 64, 128
FIELDS = ["id", "file_id", "start_s", "end_s", "vector"]


def milvus_connection(spec: str, folder: Path) -> tuple[str, str]:
    """(uri, token) pymilvus connects with: a server's ``http://host:port``, or Milvus Lite's file."""
    if spec == "milvus:local":
        return str(folder / "milvus.db"), ""
    if spec.startswith("milvus://"):
        parts = urlsplit(spec)
        token = os.environ.get(TOKEN_ENV, "")
        if not token and parts.username:
            token = unquote(parts.username) + (":" + unquote(parts.password) if parts.password else "")
        return f"http://{parts.hostname}:{parts.port or 19530}", token
    path = spec.removeprefix("milvus:")
    if not path.endswith(".db"):
        raise ConfigurationError(f"a Milvus Lite file must end in .db, not {path!r}: {USAGE}")
    return os.path.abspath(os.path.expanduser(path)), ""


class MilvusStore:
    kind = "milvus"
    holds_files = False

    def __init__(self, spec: str, folder: Path, dim: int, collection: str, stamp: ModelStamp | None) -> None:
        pymilvus = PYMILVUS.require("a Milvus search index")
        self.DataType = pymilvus.DataType
        self.public, self.dim, self.collection = redact(spec), dim, collection
        uri, token = milvus_connection(spec, folder)
        self.lite = not uri.startswith("http://")
        try:
            self._client = pymilvus.MilvusClient(uri=uri, token=token) if token else pymilvus.MilvusClient(uri=uri)
        except Exception as error:
            raise StoreUnavailableError(f"cannot connect to Milvus at {self.public}: {_first_line(error)}") from None
        self._check_model(stamp)
        if not self._client.has_collection(collection):
            self._create()
        self._client.load_collection(collection)

    def __repr__(self) -> str:
        return f"MilvusStore({self.public!r}, collection={self.collection!r})"

    def _check_model(self, stamp: ModelStamp | None) -> None:
        client, DataType = self._client, self.DataType
        if not client.has_collection(MODELS):
            schema = client.create_schema(auto_id=False)
            schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("record", DataType.VARCHAR, max_length=65535)
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field
            params = client.prepare_index_params()
            params.add_index("unused", index_type="FLAT", metric_type="L2")
            client.create_collection(MODELS, schema=schema, index_params=params)
        client.load_collection(MODELS)
        found = client.query(MODELS, filter=f"name == {json.dumps(self.collection)}", output_fields=["record"])
        where = f"the collection {self.collection} at {self.public}"
        if found:
            record = json.loads(found[0]["record"])
            if int(record["dim"]) != self.dim:
                raise IndexMismatchError(f"{where} holds {record['dim']}-dimension vectors, not {self.dim}")
            if stamp is not None:
                stamp.check(record["model"], record["fingerprint"], where)
            return
        if stamp is None:
            raise IndexMismatchError(f"{where} does not exist, and only an index with a model can create it")
        record = {"dim": self.dim, "model": stamp.model, "fingerprint": stamp.fingerprint}
        client.insert(MODELS, [{"name": self.collection, "record": json.dumps(record), "unused": [0.0, 0.0]}])

    def _create(self) -> None:
        client, DataType = self._client, self.DataType
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("file_id", DataType.INT64)
        schema.add_field("start_s", DataType.DOUBLE)
        schema.add_field("end_s", DataType.DOUBLE)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = client.prepare_index_params()
        if self.lite:
            params.add_index("vector", index_type="FLAT", metric_type="IP")
        else:
            params.add_index(
                "vector",
                index_type="HNSW",
                metric_type="IP",
                params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION},
            )
            params.add_index("file_id", index_type="STL_SORT")
        client.create_collection(self.collection, schema=schema, index_params=params, consistency_level="Strong")

    def count(self) -> int:
        found = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    def add(self, rows: WindowRows) -> None:
        for start in range(0, len(rows), INSERT_BATCH):
            end = start + INSERT_BATCH
            self._client.upsert(
                self.collection,
                [
                    {"id": int(i), "file_id": int(f), "start_s": float(s), "end_s": float(e), "vector": v.tolist()}
                    for i, f, s, e, v in zip(
                        rows.ids[start:end],
                        rows.file_ids[start:end],
                        rows.starts[start:end],
                        rows.ends[start:end],
                        rows.vectors[start:end].astype(np.float32),
                    )
                ],
            )

    def delete_files(self, file_ids: Sequence[int]) -> None:
        for start in range(0, len(file_ids), 1000):
            self._client.delete(self.collection, filter=f"file_id in [{id_list(file_ids[start : start + 1000])}]")

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
        params: dict[str, Any] = {"metric_type": "IP"}
        if not self.lite:  # an HNSW server: exact asks for a search list as wide as the collection allows
            params["params"] = {"ef": max(HNSW_EF_MIN, 2 * k, 4096 if exact else 0)}
        found = self._client.search(
            self.collection,
            [np.asarray(vector, dtype=np.float32).tolist()],
            limit=k,
            filter=f"file_id in [{id_list(file_ids)}]" if file_ids is not None else "",
            output_fields=FIELDS,
            search_params=params,
        )[0]
        return [
            Candidate(
                int(hit["id"]),
                int(hit["entity"]["file_id"]),
                float(hit["entity"]["start_s"]),
                float(hit["entity"]["end_s"]),
                float(hit["distance"]),
                np.asarray(hit["entity"]["vector"], dtype=np.float32),
            )
            for hit in found
        ]

    def windows_of(self, file_ids: Sequence[int]) -> WindowRows:
        found: list[dict[str, Any]] = []
        for start in range(0, len(file_ids), 1000):
            chunk = file_ids[start : start + 1000]
            iterator = self._client.query_iterator(
                self.collection, batch_size=QUERY_BATCH, filter=f"file_id in [{id_list(chunk)}]", output_fields=FIELDS
            )
            while page := iterator.next():
                found += page
            iterator.close()
        found.sort(key=lambda row: int(row["id"]))
        if not found:
            return WindowRows.concat([], self.dim)
        return WindowRows(
            np.array([int(r["id"]) for r in found], dtype=np.int64),
            np.array([int(r["file_id"]) for r in found], dtype=np.int64),
            np.array([float(r["start_s"]) for r in found]),
            np.array([float(r["end_s"]) for r in found]),
            np.array([r["vector"] for r in found], dtype=np.float32),
        )

    def has_ann_index(self) -> bool:
        return not self.lite

    def optimize(self, ann_threshold: int) -> None:
        """Seal what this run wrote: the server indexes sealed segments by itself."""
        self._client.flush(self.collection)

    def drop_collection(self) -> None:
        self._client.drop_collection(self.collection)
        self._client.delete(MODELS, filter=f"name == {json.dumps(self.collection)}")

    def close(self) -> None:
        self._client.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
