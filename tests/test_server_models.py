"""Several models in one server (`serve --model A --model B`): a request's `model` picks one, or
several joined by '+' as an ensemble; each model is loaded once; memory is checked at start."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import requests

from soundsift import Classifier, Ensemble
from tests.server_process import running_server
from tests.test_adapters import synthetic
from tests.test_server import assert_error, wav_bytes
from tests.test_server_adapters import teaching_form, wav

pytestmark = pytest.mark.slow  # real server processes, each loading two models

KEY = "models-key-123"
LABELS = "dog barking, rain, siren, church bells"


@pytest.fixture(scope="module")
def names(tiny_model_dir, tiny_unfused_model_dir) -> list[str]:
    return [tiny_model_dir.name, tiny_unfused_model_dir.name]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tiny_unfused_model_dir, tmp_path_factory):
    with running_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("models") / "server.log",
        models=f"{tiny_model_dir},{tiny_unfused_model_dir}",
        api_key=KEY,
    ) as process:
        yield process


@pytest.fixture(scope="module")
def local(tiny_model_dir, tiny_unfused_model_dir) -> list[Classifier]:
    return [Classifier(model=str(folder), device="cpu") for folder in (tiny_model_dir, tiny_unfused_model_dir)]


def post(server, route: str, *, data: dict | None = None, files=None, key: str | None = KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{server.url}{route}", data=data, files=files, headers=headers, timeout=60, **kwargs)


def clip_file(esc50_clips, index: int = 0):
    return {"audio": (esc50_clips[index].name, esc50_clips[index].read_bytes(), "audio/wav")}


def test_info_lists_every_served_model_with_the_default_first(server, names, local):
    info = requests.get(f"{server.url}/api/info", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert [model["name"] for model in info["models"]] == names
    assert [model["default"] for model in info["models"]] == [True, False]
    assert [model["model"] for model in info["models"]] == [classifier.model_id for classifier in local]
    assert info["ensembles"] is True and info["model"] == local[0].model_id
    log = server.log()
    assert all(f"Model {name} (" in log for name in names), log


def test_the_model_field_picks_the_model_that_answers(server, names, local, esc50_clips):
    for name, classifier in zip(names, local, strict=True):
        response = post(server, "/api/classify", data={"labels": LABELS, "model": name}, files=clip_file(esc50_clips))
        assert response.status_code == 200, response.text
        body = response.json()
        expected = classifier.classify(esc50_clips[0], LABELS)
        assert body["model"] == classifier.model_id and body["members"] is None
        assert [s["label"] for s in body["scores"]] == [s.label for s in expected.scores]
        np.testing.assert_allclose([s["score"] for s in body["scores"]], [s.score for s in expected.scores], atol=1e-4)
    default = post(server, "/api/classify", data={"labels": LABELS}, files=clip_file(esc50_clips)).json()
    assert default["model"] == local[0].model_id


def test_an_ensemble_of_served_models_answers_as_the_library_s_does(server, names, local, esc50_clips):
    response = post(
        server, "/api/classify", data={"labels": LABELS, "model": "+".join(names)}, files=clip_file(esc50_clips, 1)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = Ensemble(local).classify(esc50_clips[1], LABELS)
    assert [member["top_label"] for member in body["members"]] == [member.top_label for member in expected.members]
    assert body["agreement"] == expected.agreement and body["uncertain"] == expected.uncertain
    np.testing.assert_allclose([s["score"] for s in body["scores"]], [s.score for s in expected.scores], atol=1e-4)


def test_a_bad_file_fails_alone_in_an_ensemble_batch(server, names, esc50_clips):
    files = [
        ("audio", ("a.wav", esc50_clips[0].read_bytes(), "audio/wav")),
        ("audio", ("broken.wav", b"RIFF nonsense", "audio/wav")),
        ("audio", ("c.wav", wav_bytes(1.5), "audio/wav")),
    ]
    response = post(
        server, "/api/classify/batch", data={"labels": LABELS, "model": "+".join(reversed(names))}, files=files
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[1]["error"] == "audio_decode_error"
    assert all(len(results[i]["members"]) == 2 for i in (0, 2))


def test_one_model_routes_take_a_model_and_refuse_an_ensemble(server, names, local, esc50_clips):
    second = post(server, "/api/embed/audio", data={"model": names[1]}, files=clip_file(esc50_clips))
    assert second.status_code == 200, second.text
    vector = np.array(second.json()["embeddings"][0])
    assert second.json()["model"] == local[1].model_id
    assert float(vector @ local[1].embed_audio(esc50_clips[0])[0]) > 0.999
    text = post(server, "/api/embed/text", json={"texts": ["rain"], "model": names[1]})
    assert float(np.array(text.json()["embeddings"][0]) @ local[1].embed_text("rain")[0]) > 0.999
    detect = post(
        server, "/api/detect", data={"labels": LABELS, "model": names[1], "window_s": "2"}, files=clip_file(esc50_clips)
    )
    assert detect.status_code == 200 and detect.json()["model"] == local[1].model_id
    for route in ("/api/embed/audio", "/api/detect"):
        refused = post(server, route, data={"labels": LABELS, "model": "+".join(names)}, files=clip_file(esc50_clips))
        assert_error(refused, 422, "invalid_options")


def test_an_unknown_model_is_404_and_never_a_path_on_the_server(server, esc50_clips, tiny_model_dir):
    for model in (
        "general",
        "no-such-model",
        "/etc/passwd",
        "../" + tiny_model_dir.name,
        f"{tiny_model_dir.name}+nope",
    ):
        body = assert_error(
            post(server, "/api/classify", data={"labels": LABELS, "model": model}, files=clip_file(esc50_clips)),
            404,
            "model_not_found",
        )
        assert str(tiny_model_dir.parent) not in body["error"]["message"]
    assert_error(
        post(server, "/api/classify", data={"labels": LABELS, "model": "a+"}, files=clip_file(esc50_clips)),
        422,
        "invalid_options",
    )


def test_the_key_guards_every_model_choice(server, names, esc50_clips):
    for model in (names[1], "+".join(names)):
        response = post(
            server, "/api/classify", data={"labels": LABELS, "model": model}, files=clip_file(esc50_clips), key=None
        )
        assert response.status_code == 401


def test_start_is_refused_when_the_models_do_not_fit_in_memory(tiny_model_dir, tiny_unfused_model_dir):
    command = [sys.executable, "-m", "soundsift", "serve", "--model", str(tiny_model_dir), "--model"]
    command += [str(tiny_unfused_model_dir), "--device", "cpu", "--memory-limit-mb", "100", "--port", "0"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0
    message = finished.stderr + finished.stdout
    assert "the models need about" in message and "100 MB is --memory-limit-mb" in message
    assert tiny_model_dir.name in message and tiny_unfused_model_dir.name in message
    assert "Traceback" not in message


def test_an_engine_batches_audio_as_its_backend_runs_it(tiny_model_dir, tmp_path, monkeypatch):
    """onnx on a CPU runs one clip per encoder run, so its engine takes one clip per call and a text
    waits for one clip at most; torch runs a whole micro-batch at once."""
    import asyncio

    from soundsift import ModelSettings, ServerSettings
    from soundsift.serving.service import ClassificationService

    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    for backend, expected in (("onnx", 1), ("torch", 12)):
        model = ModelSettings(model=str(tiny_model_dir), backend=backend, device="cpu")
        service = ClassificationService.load(model, ServerSettings(micro_batch_size=12))
        try:
            assert service.default.engine.limits["audio"] == expected
        finally:
            asyncio.run(service.stop())


def test_the_openai_route_takes_the_model_field(server, names, local, esc50_clips):
    import base64

    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    text = client.embeddings.create(model=names[1], input="rain", encoding_format="float")
    assert text.model == local[1].model_id
    assert float(np.array(text.data[0].embedding) @ local[1].embed_text("rain")[0]) > 0.999
    uri = "data:audio/wav;base64," + base64.b64encode(esc50_clips[0].read_bytes()).decode("ascii")
    audio = client.embeddings.create(model=names[1], input=[uri], extra_body={"modality": "audio"})
    assert audio.model == local[1].model_id
    assert [model.id for model in client.models.list()] == names  # the default first, no server path
    with pytest.raises(openai.NotFoundError) as caught:  # with two models served, a name must be one of them
        client.embeddings.create(model="text-embedding-3-small", input="rain")
    assert caught.value.code == "model_not_found" and caught.value.type == "not_found_error"


def test_an_adapter_is_taught_on_the_model_the_request_names(server, names, local):
    files, form = teaching_form(shots=2)
    taught = post(server, "/api/adapters", data={**form, "model": names[1]}, files=files)
    assert taught.status_code == 201, taught.text
    assert taught.json()["model"] == local[1].model_id
    clip = {"audio": ("probe.wav", wav(synthetic(form["clip_labels"][0], 7)), "audio/wav")}
    answer = post(server, "/api/classify", data={"adapter": form["name"], "model": names[1]}, files=clip)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == local[1].model_id
    assert {s["label"] for s in answer.json()["scores"]} == set(form["clip_labels"])
    # The default model did not learn it: the adapter is refused there, with the reason.
    refused = post(server, "/api/classify", data={"adapter": form["name"]}, files=clip)
    assert refused.status_code == 409 and "adapter" in refused.json()["error"]["message"], refused.text
    # Its file, uploaded again: accepted for the model that taught it, refused for another or an unknown one.
    data = requests.get(f"{server.url}/api/adapters/{form['name']}", headers={"Authorization": f"Bearer {KEY}"}).content
    for model, status in ((names[1], 201), (names[0], 409), ("no-such-model", 404), (None, 201)):
        form_fields = {"name": "again"} | ({"model": model} if model else {})
        answer = post(server, "/api/adapters", data=form_fields, files={"adapter": ("a.adapter", data)})
        assert answer.status_code == status, (model, answer.text)
