"""POST /v1/embeddings against the real `openai` client: an OpenAI-compatible embedding server
with only a base URL and a key, the same vectors as /api/embed/text, behind the same key.

Audio as Infinity's clients send it (``"modality": "audio"``, or its ``/embeddings_audio`` route):
base64 data URIs give /api/embed/audio's vectors; URLs and paths are refused and never fetched."""

from __future__ import annotations

import base64
import http.server
import io
import threading

import httpx
import numpy as np
import pytest
import requests

from soundsift.serving.errors import ApiError
from soundsift.serving.routers.openai import decode_data_uri
from tests.data.audio import wav_bytes
from tests.server_process import running_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # a real server process

KEY = "openai-compat-key"
UPLOAD_MB = 2
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("openai") / "server.log"
    with running_server(tiny_model_dir, log, api_key=KEY, max_upload_mb=str(UPLOAD_MB)) as process:
        yield process


def client(server, key: str = KEY):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def test_the_openai_client_gets_the_same_vectors_as_the_native_route(server):
    texts = ["dog barking", "glass breaking", "smoke alarm"]
    answer = client(server).embeddings.create(model="laion/clap-htsat-fused", input=texts)  # base64 by default
    native = requests.post(
        f"{server.url}/api/embed/text", json={"texts": texts}, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ).json()
    vectors = np.array([item.embedding for item in sorted(answer.data, key=lambda item: item.index)])
    np.testing.assert_allclose(vectors, np.array(native["embeddings"]), atol=1e-6)
    assert vectors.shape == (3, native["dim"]) and answer.model == native["model"]
    floats = client(server).embeddings.create(model="any", input="dog barking", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, native["embeddings"][0], atol=1e-6)


def openai_error(response, status: int, kind: str, code: str) -> dict:
    """The answer is OpenAI's error shape, with the status OpenAI gives that kind of error."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == kind and error["code"] == code and error["message"], error
    return error


def test_a_wrong_key_and_bad_inputs_are_refused_in_openais_shape(server):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(server, key="wrong").embeddings.create(model="m", input="dog")
    assert caught.value.type == "authentication_error" and caught.value.code == "unauthorized"
    keyless = httpx.post(f"{server.url}/v1/embeddings", json={"input": "dog"})
    openai_error(keyless, 401, "authentication_error", "unauthorized")
    for body, code in [
        ({"input": []}, "invalid_request"),
        ({"input": "x" * 5000}, "text_too_long"),
        ({"input": "dog", "dimensions": 7}, "invalid_request"),
        ({"input": [[1, 2, 3]]}, "invalid_request"),  # token arrays: CLAP has its own tokenizer
        ({"input": "dog", "encoding_format": "int8"}, "invalid_request"),
    ]:
        response = requests.post(f"{server.url}/v1/embeddings", json=body, headers=HEADERS, timeout=60)
        openai_error(response, 400, "invalid_request_error", code)
    broken = requests.post(
        f"{server.url}/v1/embeddings", data=b'{"input": ', headers={**HEADERS, "Content-Type": "application/json"}
    )
    openai_error(broken, 400, "invalid_request_error", "invalid_request")
    with pytest.raises(openai.BadRequestError, match="characters; the limit is") as too_long:
        client(server).embeddings.create(model="m", input="x" * 5000)
    assert too_long.value.code == "text_too_long" and too_long.value.type == "invalid_request_error"
    missing = requests.post(f"{server.url}/v1/chat/completions", json={}, headers=HEADERS, timeout=60)
    openai_error(missing, 404, "not_found_error", "not_found")
    native = requests.post(f"{server.url}/api/embed/text", json={"texts": []}, headers=HEADERS, timeout=60)
    assert native.status_code == 422 and set(native.json()["error"]) == {"code", "message"}  # /api keeps its own


def data_uri(data: bytes, media_type: str = "audio/wav") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def native_audio(server, clips) -> dict:
    files = [("audio", (clip.name, clip.read_bytes(), "audio/wav")) for clip in clips]
    answer = requests.post(f"{server.url}/api/embed/audio", files=files, headers=HEADERS, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def cosines(vectors, native) -> np.ndarray:
    vectors, native = np.asarray(vectors, dtype=np.float64), np.asarray(native, dtype=np.float64)
    return np.sum(vectors * native, axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(native, axis=1)


def test_audio_data_uris_give_the_native_routes_vectors_through_the_openai_client(server, esc50_clips):
    clips = esc50_clips[:3]
    native = native_audio(server, clips)
    uris = [data_uri(clip.read_bytes()) for clip in clips]
    # Infinity's way through the openai client: the text route with modality=audio (base64 answer by default).
    answer = client(server).embeddings.create(
        model="laion/clap-htsat-fused", input=uris, extra_body={"modality": "audio"}
    )
    vectors = np.array([item.embedding for item in sorted(answer.data, key=lambda item: item.index)])
    assert vectors.shape == (3, native["dim"]) and answer.model == native["model"]
    assert np.all(cosines(vectors, native["embeddings"]) > 0.999)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert answer.usage.prompt_tokens == 0 and answer.usage.total_tokens == 0
    # Infinity's older route, through the same client; one URI as a plain string, floats.
    legacy = client(server).post(
        "/embeddings_audio",
        body={"model": "any", "input": uris[1], "encoding_format": "float"},
        cast_to=openai.types.CreateEmbeddingResponse,
    )
    assert len(legacy.data) == 1 and cosines([legacy.data[0].embedding], [native["embeddings"][1]])[0] > 0.999
    # The audio vectors are in the text's space: same size as the text route's for the same client.
    text = client(server).embeddings.create(model="m", input="dog barking")
    assert len(text.data[0].embedding) == native["dim"]


def test_infinity_clients_requests_are_answered_unchanged(server, esc50_clips):
    """The JSON that infinity_client 0.0.78 sends (OpenAIEmbeddingInputAudio.to_dict: dimensions 0
    when unset, its default model name) and the shape it reads back."""
    clip = esc50_clips[0]
    native = native_audio(server, [clip])
    body = {
        "input": [data_uri(clip.read_bytes())],
        "model": "default/not-specified",
        "encoding_format": "base64",
        "dimensions": 0,
        "modality": "audio",
    }
    with httpx.Client(base_url=f"{server.url}/v1", headers=HEADERS, timeout=120) as http:
        for route, request in [("/embeddings", body), ("/embeddings_audio", {**body, "modality": None})]:
            request = {key: value for key, value in request.items() if value is not None}
            response = http.post(route, json=request)
            assert response.status_code == 200, (route, response.text)
            answer = response.json()
            assert answer["object"] == "list" and answer["model"] == native["model"] and "usage" in answer
            (item,) = answer["data"]
            assert item["object"] == "embedding" and item["index"] == 0
            vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            assert cosines([vector], native["embeddings"])[0] > 0.999
        texts = http.post("/embeddings", json={"input": ["dog"], "modality": "text", "dimensions": 0})
        assert texts.status_code == 200 and len(texts.json()["data"][0]["embedding"]) == native["dim"]


@pytest.fixture
def watched_http_server(tmp_path):
    """A file server on 127.0.0.1 that counts the requests it gets: the audio routes must send none."""
    (tmp_path / "dog.wav").write_bytes(wav_bytes(1.0))
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/dog.wav", tmp_path / "dog.wav", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_urls_paths_and_broken_data_uris_are_refused_with_400_and_never_fetched(server, watched_http_server):
    url, path, hits = watched_http_server
    assert requests.get(url, timeout=10).status_code == 200 and hits == ["/dog.wav"]  # the file server works
    hits.clear()
    good = data_uri(wav_bytes(1.0))
    refused = {
        url: "is a URL",
        f"file://{path}": "is a URL",
        str(path): "is not a data URI",
        "data:audio/wav,RIFF": "must be base64",  # percent-encoded, not base64
        "data:audio/wav;base64,": "holds no data",
        "data:audio/wav;base64,UklGRg==!!": "invalid base64",
        "data:audio/wav;base64,UklG": "audio_decode_error",  # good base64 of three bytes: no audio
        "data:audio/wav;base64,UklGRg== ": "invalid base64",
    }
    for bad, message in refused.items():
        for route, body in [
            ("embeddings", {"input": [good, bad], "modality": "audio"}),
            ("embeddings_audio", {"input": [good, bad]}),
        ]:
            response = requests.post(f"{server.url}/v1/{route}", json=body, headers=HEADERS, timeout=60)
            error = response.json()["error"]
            assert response.status_code == 400 and error["type"] == "invalid_request_error", (bad, response.text)
            assert error["message"].startswith("input 1") and (
                message in error["message"] or error["code"] == "audio_decode_error"
            ), (bad, error)
    assert hits == []  # not one request reached the file server
    with pytest.raises(openai.BadRequestError, match="never fetched"):
        client(server).embeddings.create(model="m", input=[url], extra_body={"modality": "audio"})
    assert hits == []


def test_a_clip_that_is_not_audio_fails_alone_with_400_naming_its_index(server):
    uris = [data_uri(wav_bytes(1.0)), data_uri(wav_bytes(1.0, frequency=880)), data_uri(b"no audio here " * 100)]
    response = requests.post(
        f"{server.url}/v1/embeddings", json={"input": uris, "modality": "audio"}, headers=HEADERS, timeout=60
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "audio_decode_error"
    assert response.json()["error"]["message"].startswith("input 2:")
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).embeddings.create(model="m", input=uris[::-1], extra_body={"modality": "audio"})
    assert caught.value.code == "audio_decode_error" and "input 0:" in caught.value.message
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200  # and the server is fine


def test_too_large_audio_too_many_clips_and_wrong_dimensions_are_refused(server):
    large = data_uri(b"\0" * (UPLOAD_MB * 2**20))  # past the request limit: refused while it streams in
    response = requests.post(
        f"{server.url}/v1/embeddings", json={"input": [large], "modality": "audio"}, headers=HEADERS, timeout=60
    )
    openai_error(response, 413, "invalid_request_error", "upload_too_large")  # written by the upload guard
    many = [data_uri(wav_bytes(0.1))] * 33  # SOUNDSIFT_MAX_BATCH_FILES is 32
    response = requests.post(f"{server.url}/v1/embeddings_audio", json={"input": many}, headers=HEADERS, timeout=60)
    openai_error(response, 400, "invalid_request_error", "too_many_files")
    for body in [{"input": [], "modality": "audio"}, {"input": "data:audio/wav;base64,", "modality": "video"}]:
        response = requests.post(f"{server.url}/v1/embeddings", json=body, headers=HEADERS, timeout=60)
        openai_error(response, 400, "invalid_request_error", "invalid_request")
    response = requests.post(
        f"{server.url}/v1/embeddings_audio",
        json={"input": [data_uri(wav_bytes(1.0))], "dimensions": 7},
        headers=HEADERS,
        timeout=60,
    )
    assert "not 7" in openai_error(response, 400, "invalid_request_error", "invalid_request")["message"]
    with pytest.raises(openai.BadRequestError, match="not 7"):
        client(server).embeddings.create(
            model="m", input=[data_uri(wav_bytes(1.0))], dimensions=7, extra_body={"modality": "audio"}
        )


def test_the_model_list_names_the_served_model_and_needs_the_key(server, tiny_model_dir):
    listed = client(server).models.list()
    assert [(model.id, model.object) for model in listed] == [(tiny_model_dir.name, "model")]
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").models.list()


def test_the_audio_routes_need_the_key(server):
    uri = data_uri(wav_bytes(1.0))
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").embeddings.create(model="m", input=[uri], extra_body={"modality": "audio"})
    for route, body in [("embeddings", {"input": [uri], "modality": "audio"}), ("embeddings_audio", {"input": [uri]})]:
        response = httpx.post(f"{server.url}/v1/{route}", json=body, timeout=60)
        openai_error(response, 401, "authentication_error", "unauthorized")


def test_a_data_uris_size_is_checked_before_any_of_it_is_decoded():
    """The router's own bound: what a data URI would decode to is weighed from its length first."""
    payload = b"RIFF" + bytes(range(256)) * 40
    into = io.BytesIO()
    assert decode_data_uri(data_uri(payload), into, "input 0", budget=len(payload), limit=len(payload)) == len(payload)
    assert into.getvalue() == payload
    untouched = io.BytesIO()
    with pytest.raises(ApiError) as caught:
        decode_data_uri(data_uri(payload), untouched, "input 3", budget=len(payload) - 3, limit=len(payload))
    assert caught.value.http_status == 413 and caught.value.code == "upload_too_large"
    assert str(caught.value).startswith("input 3:") and untouched.getvalue() == b""
    # Larger than one decoding chunk: decoded in pieces, byte for byte.
    big = bytes(range(256)) * 20_000
    into = io.BytesIO()
    assert decode_data_uri(data_uri(big), into, "input 0", budget=len(big), limit=len(big)) == len(big)
    assert into.getvalue() == big
