"""Search recordings by what they sound like: an incremental index of window embeddings in a vector
store, queried by text (translated like labels) or by an example sound.

- `catalog`: the index folder's SQLite catalogue (manifest, one row per file: stat, hash, status);
- `stores`: where the window vectors live (LanceDB embedded by default, Qdrant by URL);
- `embedding`: windows of a file to vectors, files in parallel, and the model fingerprint;
- `indexer`: what to (re)index, deleting what is gone, resumable;
- `query`: text and example queries, exclusions, filters, merging adjacent windows;
- `ray_index`: the embedding step on a Ray actor pool (`--engine ray`);
- `library`: `Library`, the API the CLI, the server and the page call.
"""

from soundsift.search.library import Library
from soundsift.search.results import IndexReport, IndexStatus, SearchHit, SearchResult

__all__ = ["IndexReport", "IndexStatus", "Library", "SearchHit", "SearchResult"]
