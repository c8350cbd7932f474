"""Result types of detection: when each sound happens in a recording (pydantic, shared with the HTTP API)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SoundEvent(BaseModel):
    label: str
    start_s: float
    end_s: float
    peak_score: float = Field(description="Highest window score of the label inside the event.")
    mean_score: float = Field(description="Mean window score of the label inside the event.")


class WindowScores(BaseModel):
    start_s: float
    end_s: float
    scores: dict[str, float] = Field(description="Score of every label for this window alone.")
    gated: bool = Field(False, description="Quieter than min_dbfs: not sent to the model, every score 0.")


class Detection(BaseModel):
    """When each sound happens in a recording."""

    source: str
    duration_s: float
    window_s: float
    hop_s: float
    labels: list[str] = Field(description="Every label scored, background labels included.")
    background: list[str] = Field(description="Labels that compete in the scores but never make events.")
    events: list[SoundEvent]
    windows: list[WindowScores]
    gated_windows: int = Field(0, description="Windows the silence gate kept from the model (min_dbfs).")
    model: str
    translations: dict[str, list[str]] = Field(
        default_factory=dict, description="English phrasings used for labels written in another language."
    )
    warnings: list[str] = Field(default_factory=list)
