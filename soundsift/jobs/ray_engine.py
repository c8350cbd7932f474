"""The batch job on Ray Data: a path list mapped over an actor pool that holds the model.

One actor per GPU (when the job runs on CUDA) or per ``cpus_per_actor`` CPUs. Locally Ray starts a
private instance; ``address`` joins an existing cluster. Rows come back to the driver and go
through the same writer as the local engine, so the output format and resuming are identical.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from soundsift.core.placement import ray_placement
from soundsift.core.settings import ModelSettings
from soundsift.jobs.batch import BatchSummary
from soundsift.jobs.outputs import RowWriter, result_row


class _ClassifyActor:
    """Holds one Classifier; classifies a batch of paths into JSON rows."""

    def __init__(
        self,
        settings: dict[str, Any],
        labels: Any,
        templates: list[str] | None,
        multi_label: bool,
        threshold: float | None,
        label_thresholds: float | Mapping[str, float] | None,
    ) -> None:
        from soundsift.core.classifier import Classifier

        self.classifier = Classifier(ModelSettings.build(**settings))
        self.prepared = self.classifier.prepare_labels(labels, templates=templates, multi_label=multi_label)
        self.threshold, self.label_thresholds = threshold, label_thresholds

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        paths = [str(path) for path in batch["path"]]
        results = self.classifier.classify_batch(
            paths, self.prepared, threshold=self.threshold, label_thresholds=self.label_thresholds, errors="return"
        )
        return {
            "row": [json.dumps(result_row(result, path), ensure_ascii=False) for result, path in zip(results, paths)]
        }


def run_on_ray(
    settings: ModelSettings,
    paths: Sequence[str],
    writer: RowWriter,
    summary: BatchSummary,
    *,
    labels: Any,
    templates: list[str] | None,
    multi_label: bool,
    threshold: float | None = None,
    label_thresholds: float | Mapping[str, float] | None = None,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    progress: Any = None,
) -> None:
    placement = ray_placement(settings.device, address=address, actors=actors, cpus_per_actor=cpus_per_actor)
    dataset = placement.ray.data.from_items([{"path": path} for path in paths])
    rows = dataset.map_batches(
        _ClassifyActor,
        batch_size=settings.batch_size,
        concurrency=placement.actors,
        num_gpus=placement.gpus_per_actor,
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs={
            "settings": settings.model_dump(),
            "labels": labels,
            "templates": templates,
            "multi_label": multi_label,
            "threshold": threshold,
            "label_thresholds": label_thresholds,
        },
    )
    for batch in rows.iter_batches(batch_size=settings.batch_size, batch_format="numpy"):
        decoded = [json.loads(row) for row in batch["row"]]
        writer.append(decoded)
        summary.count(decoded)
        if progress is not None:
            progress.update(len(decoded))
