"""Where a Ray job's model replicas run: one helper for `batch --engine ray` and `index --engine ray`,
so both decide the pool size and GPU use the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from soundsift.optional import RAY


@dataclass(frozen=True)
class RayPlacement:
    """Ray itself (connected), how many model actors to run, and the GPUs each takes."""

    ray: Any
    actors: int
    gpus_per_actor: int


def ray_placement(device: str, *, address: str | None, actors: int | None, cpus_per_actor: float) -> RayPlacement:
    """Connect to Ray (``address``: a cluster; None: start or join a local one) and size the actor
    pool: one actor per GPU when the model runs on CUDA (``cuda``, or ``auto`` on a cluster with
    GPUs), otherwise one per ``cpus_per_actor`` CPUs; ``actors`` overrides the count."""
    ray = RAY.require("the ray engine")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    resources = ray.cluster_resources()
    use_gpus = device.startswith("cuda") or (device == "auto" and bool(resources.get("GPU")))
    fitting = int(resources.get("GPU", 0)) if use_gpus else int(resources.get("CPU", 1) // cpus_per_actor)
    return RayPlacement(ray, actors or max(1, fitting), 1 if use_gpus else 0)
