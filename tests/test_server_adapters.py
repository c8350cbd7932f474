"""/api/adapters on a real server process: teach from uploaded clips, use the adapter by name on
classify / batch / detect, download and re-upload it, delete it; the same key and limits as the
rest of the API; names are never paths; a damaged or foreign adapter is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
import soundfile

from soundsift import Adapter, Classifier
from tests.server_process import running_server
from tests.test_adapters import RATE, SOUNDS, synthetic

pytestmark = pytest.mark.slow  # a real server process

KEY = "adapter-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format="WAV")
    return buffer.getvalue()


def teaching_form(shots: int = 3) -> tuple[list, dict]:
    files, labels = [], []
    for kind in SOUNDS:
        for variant in range(shots):
            files.append(("clips", (f"{kind}-{variant}.wav", wav(synthetic(kind, variant)))))
            labels.append(kind)
    return files, {"name": "workshop", "clip_labels": labels}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    with running_server(
        tiny_model_dir,
        folder / "server.log",
        api_key=KEY,
        adapter_dir=str(folder / "store"),
        max_teach_clips="12",
        max_adapters="3",
    ) as process:
        process.adapter_store = folder / "store"
        yield process


@pytest.fixture(scope="module")
def taught(server) -> dict:
    files, form = teaching_form()
    response = requests.post(f"{server.url}/api/adapters", files=files, data=form, headers=AUTH, timeout=120)
    assert response.status_code == 201, response.text
    return response.json()


def error_code(response: requests.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    return response.json()["error"]["code"]


def test_teach_list_and_use_by_name(server, taught):
    assert taught["labels"] == list(SOUNDS) or set(taught["labels"]) == set(SOUNDS)
    assert taught["examples"] == {kind: 3 for kind in SOUNDS} and taught["cross_validated"]
    listed = requests.get(f"{server.url}/api/adapters", headers=AUTH, timeout=10).json()["adapters"]
    assert [item["name"] for item in listed] == ["workshop"]

    clip = ("audio", ("clip.wav", wav(synthetic("clicks", 5))))
    answer = requests.post(
        f"{server.url}/api/classify", files=[clip], data={"adapter": "workshop"}, headers=AUTH, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["top_label"] == "clicks" and answer.json()["adapter"] == "workshop"

    mixed = requests.post(
        f"{server.url}/api/classify/batch",
        files=[clip, ("audio", ("hum.wav", wav(synthetic("hum", 6))))],
        data={"adapter": "workshop", "labels": "glass breaking"},
        headers=AUTH,
        timeout=60,
    ).json()["results"]
    assert [result["top_label"] for result in mixed] == ["clicks", "hum"]
    assert {score["label"] for score in mixed[0]["scores"] if not score["taught"]} == {"glass breaking"}

    recording = np.concatenate([synthetic("hum", 4, seconds=3.0), synthetic("clicks", 4, seconds=3.0)])
    detection = requests.post(
        f"{server.url}/api/detect",
        files=[("audio", ("long.wav", wav(recording)))],
        data={"adapter": "workshop", "window_s": "1"},
        headers=AUTH,
        timeout=60,
    )
    assert detection.status_code == 200, detection.text
    assert set(detection.json()["labels"]) == set(SOUNDS)


def test_download_reupload_and_delete(server, taught, tmp_path):
    downloaded = requests.get(f"{server.url}/api/adapters/workshop", headers=AUTH, timeout=10)
    assert downloaded.status_code == 200 and downloaded.content[8:9] == b"{"
    Adapter.from_bytes(downloaded.content)  # a valid adapter file
    copy = requests.post(
        f"{server.url}/api/adapters",
        files=[("adapter", ("copy.adapter", downloaded.content))],
        data={"name": "copy"},
        headers=AUTH,
        timeout=30,
    )
    assert copy.status_code == 201, copy.text
    assert requests.delete(f"{server.url}/api/adapters/copy", headers=AUTH, timeout=10).status_code == 204
    gone = requests.post(
        f"{server.url}/api/classify",
        files=[("audio", ("a.wav", wav(synthetic("hum", 1))))],
        data={"adapter": "copy"},
        headers=AUTH,
        timeout=30,
    )
    assert gone.status_code == 404 and error_code(gone) == "adapter_not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/adapters"),
        ("POST", "/api/adapters"),
        ("GET", "/api/adapters/workshop"),
        ("DELETE", "/api/adapters/workshop"),
    ],
)
def test_every_adapter_route_needs_the_key(server, taught, method, path):
    files, form = teaching_form(shots=1)
    response = requests.request(
        method,
        server.url + path,
        files=files if method == "POST" else None,
        data=form if method == "POST" else None,
        timeout=30,
    )
    assert response.status_code == 401 and error_code(response) == "unauthorized"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "x" * 65, "名字"])
def test_names_are_never_paths(server, name):
    files, form = teaching_form(shots=1)
    response = requests.post(
        f"{server.url}/api/adapters", files=files, data={**form, "name": name}, headers=AUTH, timeout=30
    )
    assert response.status_code == 422 and error_code(response) in ("invalid_adapter", "invalid_request")


def test_limits_and_bad_inputs_are_clear_errors(server, taught, tiny_unfused_model_dir):
    files, form = teaching_form(shots=5)  # 15 clips, the limit is 12
    too_many = requests.post(f"{server.url}/api/adapters", files=files, data=form, headers=AUTH, timeout=30)
    assert too_many.status_code == 422 and error_code(too_many) == "invalid_examples"

    files, form = teaching_form(shots=1)
    unpaired = requests.post(
        f"{server.url}/api/adapters", files=files, data={**form, "clip_labels": ["hum"]}, headers=AUTH, timeout=30
    )
    assert unpaired.status_code == 422 and error_code(unpaired) == "invalid_examples"

    broken = [("clips", ("a.wav", b"RIFF not audio")), ("clips", ("b.wav", wav(synthetic("hum", 1))))]
    no_usable = requests.post(
        f"{server.url}/api/adapters",
        files=broken,
        data={"name": "broken", "clip_labels": ["hiss", "hum"]},
        headers=AUTH,
        timeout=30,
    )
    assert no_usable.status_code == 422 and "hiss" in no_usable.json()["error"]["message"]

    damaged = requests.post(
        f"{server.url}/api/adapters",
        files=[("adapter", ("x.adapter", b"\x00" * 40))],
        data={"name": "x"},
        headers=AUTH,
        timeout=30,
    )
    assert damaged.status_code == 422 and error_code(damaged) == "invalid_adapter"

    foreign = Classifier(model=str(tiny_unfused_model_dir), device="cpu")
    other = Adapter.fit(foreign, {kind: [(synthetic(kind, 0), RATE)] for kind in SOUNDS[:2]})
    refused = requests.post(
        f"{server.url}/api/adapters",
        files=[("adapter", ("o.adapter", other.to_bytes()))],
        data={"name": "other"},
        headers=AUTH,
        timeout=30,
    )
    assert refused.status_code == 409 and error_code(refused) == "adapter_mismatch"
    assert "Traceback" not in server.log()


def test_adapters_survive_a_restart(tiny_model_dir, server, taught, tmp_path):
    store = next(path for path in server.log_path.parent.glob("store"))
    with running_server(tiny_model_dir, tmp_path / "again.log", api_key=KEY, adapter_dir=str(store)) as again:
        listed = requests.get(f"{again.url}/api/adapters", headers=AUTH, timeout=10).json()["adapters"]
    assert "workshop" in [item["name"] for item in listed]


def relabelled(adapter: Adapter, labels: list[str]) -> bytes:
    """The adapter with other labels (and arrays and prompts of the matching shape): a file only a
    hostile or careless writer makes, consistent in every other way."""
    import dataclasses

    count = len(labels)
    pick = np.arange(count) % len(adapter.labels)
    return dataclasses.replace(
        adapter,
        labels=tuple(labels),
        weights=adapter.weights[pick],
        text=adapter.text[pick],
        thresholds=adapter.thresholds[pick],
        prompts=tuple((f"This is a sound of {label}.",) for label in labels),
        support_owner=adapter.support_owner % count,
    ).to_bytes()


def upload_adapter(server, data: bytes, name: str) -> requests.Response:
    return requests.post(
        f"{server.url}/api/adapters",
        files=[("adapter", (f"{name}.adapter", data))],
        data={"name": name},
        headers=AUTH,
        timeout=30,
    )


def with_metadata(data: bytes, metadata_json: str) -> bytes:
    """The same tensors under another (raw) metadata string."""
    from safetensors.numpy import load, save

    return save(load(data), metadata={"soundsift-adapter": metadata_json})


@pytest.mark.parametrize(
    ("labels", "code"),
    [
        ([f"sound {i}" for i in range(5000)], "invalid_labels"),
        (["x" * 5000, "hum"], "invalid_labels"),
        (["dog\x00bark", "hum"], "invalid_text"),
        (["\x1b[31mred\x1b[0m", "hum"], "invalid_text"),
        (["", "hum"], "invalid_labels"),
        (["Hum", "hum"], "invalid_labels"),
    ],
    ids=["5000-labels", "5000-characters", "nul", "terminal-escape", "empty", "twice"],
)
def test_an_uploaded_adapter_obeys_the_label_rules_of_teaching(server, taught, labels, code):
    adapter = Adapter.from_bytes(requests.get(f"{server.url}/api/adapters/workshop", headers=AUTH, timeout=10).content)
    response = upload_adapter(server, relabelled(adapter, labels), "relabelled")
    assert response.status_code == 422 and error_code(response) == code, response.text[:300]
    names = [item["name"] for item in requests.get(f"{server.url}/api/adapters", headers=AUTH).json()["adapters"]]
    assert "relabelled" not in names


@pytest.mark.parametrize(
    "metadata",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, '"' + "x" * (17 << 20) + '"', "{"],
    ids=["deep-list", "deep-object", "huge", "truncated"],
)
def test_no_structure_of_an_uploaded_adapter_file_makes_a_5xx(server, taught, metadata):
    data = requests.get(f"{server.url}/api/adapters/workshop", headers=AUTH, timeout=10).content
    response = upload_adapter(server, with_metadata(data, metadata), "deep")
    assert response.status_code in (413, 422), response.text[:300]
    assert response.json()["error"]["code"] in ("invalid_adapter", "upload_too_large")


def test_a_deeply_nested_safetensors_header_is_a_clear_error(server):
    header = ('{"__metadata__":' + '{"a":' * 50_000 + '"x"' + "}" * 50_001).encode()
    data = len(header).to_bytes(8, "little") + header
    response = upload_adapter(server, data, "deep")
    assert response.status_code == 422 and error_code(response) == "invalid_adapter", response.text[:300]


def crafted(adapter: Adapter, **changes) -> bytes:
    import dataclasses

    return dataclasses.replace(adapter, **changes).to_bytes()


def with_tensor(data: bytes, name: str, value: np.ndarray) -> bytes:
    """The same file with one tensor replaced (what to_bytes itself would refuse to write)."""
    import json
    import struct

    from safetensors.numpy import load, save

    (header_size,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + header_size])["__metadata__"]
    tensors = load(data)
    tensors[name] = value
    return save(tensors, metadata=metadata)


@pytest.mark.parametrize(
    "craft",
    [
        lambda a, data: with_tensor(data, "support_owner", a.support_owner.astype(np.float32)),
        lambda a, data: crafted(a, thresholds=np.full_like(a.thresholds, np.nan)),
        lambda a, data: crafted(a, text=np.full_like(a.text, np.inf)),
        lambda a, data: crafted(a, options={"alpha": 1e308, "beta": 1e308}),
        lambda a, data: crafted(a, logit_scale=1e308),
    ],
    ids=["float-owners", "nan-thresholds", "inf-text", "huge-options", "huge-logit-scale"],
)
def test_a_crafted_adapter_is_refused_and_leaves_no_file(server, taught, craft):
    """Values no teaching writes (found by a hostile review): float label indices crashed the save
    (500, and a .partial file stayed each time); non-finite or overflowing numbers were stored and
    then answered classify requests with null scores."""
    data = requests.get(f"{server.url}/api/adapters/workshop", headers=AUTH, timeout=10).content
    adapter = Adapter.from_bytes(data)
    before = sorted(path.name for path in server.adapter_store.iterdir())
    response = upload_adapter(server, craft(adapter, data), "crafted")
    assert response.status_code == 422 and error_code(response) == "invalid_adapter", response.text[:300]
    assert sorted(path.name for path in server.adapter_store.iterdir()) == before


def test_teaching_with_more_clips_than_the_engine_queue_holds(tiny_model_dir, tmp_path):
    """The engine's queue holds 2 x max_queue clips (4 here); teaching takes up to max_teach_clips
    (12 here) and sends them in parts, so an idle server teaches instead of answering 503."""
    with running_server(
        tiny_model_dir, tmp_path / "server.log", api_key=KEY, adapter_dir=str(tmp_path / "store"), max_queue="2"
    ) as small:
        files, form = teaching_form()
        assert len(files) > 4
        response = requests.post(f"{small.url}/api/adapters", files=files, data=form, headers=AUTH, timeout=300)
        assert response.status_code == 201, response.text[:300]
