"""Ways to hand a Detection to people and tools: CSV, Audacity label track, timeline plot."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from soundsift.detection.results import Detection

if TYPE_CHECKING:  # matplotlib is the optional "eval" extra; imported when a plot is drawn
    from matplotlib.figure import Figure

EVENT_COLUMNS = ["label", "start_s", "end_s", "peak_score", "mean_score"]


def events_csv(detection: Detection) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EVENT_COLUMNS)
    writer.writeheader()
    for event in detection.events:
        writer.writerow(event.model_dump())
    return buffer.getvalue()


def audacity_labels(detection: Detection) -> str:
    """Audacity's label-track text: start<TAB>end<TAB>label per line (File > Import > Labels)."""
    return "".join(f"{e.start_s:.3f}\t{e.end_s:.3f}\t{e.label}\n" for e in detection.events)


@dataclass(frozen=True)
class TimelineText:
    """The words on a timeline plot, so that the page can draw it in the reader's language."""

    time_axis: str = "time (s)"
    score_axis: str = "score"
    title: str = "{source}: {events} events"


def plot_timeline(detection: Detection, path: Path | None = None, *, text: TimelineText = TimelineText()) -> Figure:
    """Score curve of every label over time with its events shaded; saved to ``path`` when given.

    Returns the matplotlib Figure (the web page shows it directly). It is made with matplotlib's
    object API, not pyplot, so no global figure registry keeps it alive: it is freed with its last
    reference (pyplot kept one figure per web request)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 3.6))
    axes = figure.subplots()
    centres = [(w.start_s + w.end_s) / 2 for w in detection.windows]
    colours = {}
    for label in detection.labels:
        style = ":" if label in detection.background else "-"
        (line,) = axes.plot(centres, [w.scores[label] for w in detection.windows], style, label=label, linewidth=1.4)
        colours[label] = line.get_color()
    for event in detection.events:
        axes.axvspan(event.start_s, event.end_s, color=colours[event.label], alpha=0.18)
    axes.set_xlim(0, max(detection.duration_s, 1e-3))
    axes.set_ylim(0, 1)
    axes.set_xlabel(text.time_axis)
    axes.set_ylabel(text.score_axis)
    axes.set_title(text.title.format(source=Path(detection.source).name, events=len(detection.events)))
    axes.legend(loc="upper right", fontsize=8, ncol=min(4, len(detection.labels)))
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure
