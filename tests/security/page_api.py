"""Gradio's own HTTP routes, spoken as a browser (or an attacker) speaks them: upload a file, join the
queue for one of the page's functions, read the result from the event stream."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import requests


def function_index(base_url: str, name: str, headers: dict[str, str]) -> int:
    """fn_index of the page function ``name`` (e.g. "classify"), from the page's config."""
    config = requests.get(f"{base_url}/config", headers=headers, timeout=10).json()
    return next(index for index, dependency in enumerate(config["dependencies"]) if dependency["api_name"] == name)


def upload(base_url: str, path: Path, headers: dict[str, str]) -> requests.Response:
    with open(path, "rb") as handle:
        return requests.post(f"{base_url}/gradio_api/upload", files={"files": handle}, headers=headers, timeout=30)


def file_value(path: str, name: str = "clip.wav") -> dict:
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def join(base_url: str, fn_index: int, data: list, headers: dict[str, str]) -> tuple[requests.Response, str]:
    session = uuid.uuid4().hex[:10]
    response = requests.post(
        f"{base_url}/gradio_api/queue/join",
        json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None},
        headers=headers,
        timeout=10,
    )
    return response, session


def result(base_url: str, session: str, headers: dict[str, str], timeout_s: float = 60) -> dict:
    """The process_completed message of the session's event."""
    with requests.get(
        f"{base_url}/gradio_api/queue/data",
        params={"session_hash": session},
        headers=headers,
        stream=True,
        timeout=timeout_s,
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event stream ended without a result")


def classify_inputs(file: dict, labels: str = "dog, rain") -> list:
    """The classify function's inputs: audio, labels, threshold, min margin, template, multi-label, the
    multi-label similarity, adapter, model (None: the default), and whether the microphone is still
    recording (the page's own check)."""
    return [file, labels, 0.35, 0.05, "", False, 0.3, "", None, False]
