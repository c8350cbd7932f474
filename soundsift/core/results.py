"""Result types. Pydantic models, so the HTTP API and JSON output share one schema."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LabelScore(BaseModel):
    label: str = Field(description="The class name as the user wrote it.")
    score: float = Field(description="Softmax probability over the classes, using the model's logit scale.")
    similarity: float = Field(description="Cosine similarity between the audio and the class embedding.")
    detected: bool | None = Field(
        default=None, description="Multi-label mode only: similarity is at or above this label's threshold."
    )
    prompt_text: str = Field("", description="The exact text(s) the text encoder saw for this label, ' | '-joined.")
    translated_as: list[str] | None = Field(
        default=None, description="English phrasings used for a label written in another language (null if none)."
    )
    vetoed: bool | None = Field(
        default=None,
        description="Labels with exclusions only: an excluded sound matched the audio better, so this "
        "label cannot be the answer.",
    )
    taught: bool | None = Field(
        default=None, description="With an adapter: true for a label taught from examples, false for a zero-shot one."
    )


class MemberAnswer(BaseModel):
    """Ensembles: one model's own answer."""

    model: str = Field(description="The member's CLAP checkpoint.")
    top_label: str | None = Field(description="The member's best class (null when it has none).")
    confidence: float = Field(description="The member's score for its best class.")


class Classification(BaseModel):
    """The answer for one audio input."""

    source: str = Field(description="The input's name (file path, upload name or '<array>').")
    top_label: str | None = Field(
        description="Best class; in multi-label mode the best detected class, or null when none is detected."
    )
    confidence: float = Field(description="Score of the best class.")
    margin: float = Field(description="Score of the best class minus the second best.")
    uncertain: bool = Field(
        description="Confidence below the threshold, margin below the minimum, silent audio, "
        "(multi-label) nothing detected, or (ensembles) the models disagree on the top label."
    )
    scores: list[LabelScore] = Field(description="Every class, best first.")
    detected_labels: list[str] | None = Field(default=None, description="Multi-label mode: every detected class.")
    duration_s: float = Field(description="Duration of the decoded audio in seconds.")
    silent: bool = Field(description="The audio is (near) silence; its scores mean little.")
    model: str = Field(
        description="The CLAP checkpoint that produced the scores; for an ensemble its members' joined by '+'."
    )
    warnings: list[str] = Field(default_factory=list, description="E.g. labels that could not be translated.")
    none_of_these: bool = Field(
        default=False,
        description="With an adapter: the best label is a taught one but the clip is below its calibrated "
        "threshold, so the sound fits none of the taught labels (uncertain is true too).",
    )
    adapter: str | None = Field(default=None, description="The adapter whose taught labels took part, if any.")
    members: list[MemberAnswer] | None = Field(
        default=None, description="Ensembles only: each model's own top label, in the order the ensemble names them."
    )
    agreement: float | None = Field(
        default=None,
        description="Ensembles only: the share of the models whose top label is the ensemble's (1: all agree).",
    )


class FailedInput(BaseModel):
    """Stands in place of a Classification for an input that could not be processed."""

    source: str
    error: str = Field(description="Stable error code, e.g. audio_decode_error.")
    message: str
