"""What searching and indexing return (pydantic, so the HTTP API serves them as they are)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SearchHit(BaseModel):
    """One place in one recording: adjacent matching windows of a file merged into one span."""

    path: str = Field(description="The indexed file (absolute path as indexed).")
    start_s: float = Field(description="Start of the span, seconds from the start of the file.")
    end_s: float = Field(description="End of the span.")
    score: float = Field(description="Cosine similarity of the best window to the query (-1..1).")
    best_start_s: float = Field(description="Start of the best-matching window.")
    best_end_s: float = Field(description="End of the best-matching window.")
    windows: int = Field(description="Matching windows merged into this hit.")
    file_id: int = Field(description="The file's id in this index (for playback on the page).")
    file_duration_s: float | None = Field(default=None, description="Length of the whole file.")


class SearchResult(BaseModel):
    query: str | None = Field(default=None, description="The text query as given.")
    example: str | None = Field(default=None, description="The example sound's name, when searching by example.")
    hits: list[SearchHit]
    exact: bool = Field(description="True: every window was compared; False: an approximate (ANN) index answered.")
    translated_as: list[list[str] | None] = Field(
        default_factory=list, description="Per comma-separated description: the English the model saw, if translated."
    )
    excluded: list[str] = Field(default_factory=list, description="Sounds a hit must not be more like than the query.")
    vetoed: int = Field(default=0, description="Candidate windows dropped: an excluded sound matched them better.")
    warnings: list[str] = Field(default_factory=list)
    model: str
    windows_searched: int = Field(description="Windows in the index when the search ran.")


class FileProblem(BaseModel):
    path: str
    error: str = Field(description="Stable error code, as in soundsift.errors.")
    message: str


class IndexReport(BaseModel):
    """One indexing run."""

    files_seen: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    touched: int = Field(default=0, description="Modified time changed, content hash did not: kept as they were.")
    resumed: int = Field(default=0, description="Files an interrupted run left unfinished, indexed now.")
    removed: int = Field(default=0, description="Files gone from disk, dropped from the index.")
    failed: list[FileProblem] = Field(default_factory=list)
    unreadable: list[FileProblem] = Field(
        default_factory=list, description="Folders that could not be listed; the files indexed under them are kept."
    )
    windows_added: int = 0
    windows_gated: int = Field(default=0, description="Windows quieter than min_dbfs: not embedded, not stored.")
    audio_s: float = Field(default=0.0, description="Seconds of audio embedded in this run.")
    wall_s: float = 0.0
    interrupted: bool = False

    @property
    def processed(self) -> int:
        return self.added + self.changed + self.resumed + len(self.failed)


class IndexStatus(BaseModel):
    """What an index holds."""

    path: str
    exists: bool
    model: str | None = None
    dim: int | None = None
    window_s: float | None = None
    hop_s: float | None = None
    store: str | None = None
    files_indexed: int = 0
    files_failed: int = 0
    files_pending: int = Field(default=0, description="Left unfinished by an interrupted run; the next run redoes them")
    windows: int = 0
    audio_hours: float = 0.0
    approximate_index: bool = Field(
        default=False, description="An ANN index exists (built above ann_threshold windows)"
    )
    ann_threshold: int | None = None
    roots: list[str] = Field(default_factory=list, description="Folders indexed before; a bare re-run rescans them.")
    failures: list[FileProblem] = Field(default_factory=list, description="Up to 100 failed files.")
