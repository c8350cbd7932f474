"""POST /v1/embeddings against the real `openai` client: an OpenAI-compatible embedding server
with only a base URL and a key, the same vectors as /api/embed/text, behind the same key."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.server_process import running_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # a real server process

KEY = "openai-compat-key"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("openai") / "server.log", api_key=KEY) as process:
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


def test_a_wrong_key_and_bad_inputs_are_refused_as_json(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").embeddings.create(model="m", input="dog")
    headers = {"Authorization": f"Bearer {KEY}"}
    for body, code in [
        ({"input": []}, "invalid_request"),
        ({"input": "x" * 5000}, "text_too_long"),
        ({"input": "dog", "dimensions": 7}, "invalid_request"),
        ({"input": [[1, 2, 3]]}, "invalid_request"),  # token arrays: CLAP has its own tokenizer
    ]:
        response = requests.post(f"{server.url}/v1/embeddings", json=body, headers=headers, timeout=60)
        assert response.status_code == 422 and response.json()["error"]["code"] == code, (body, response.text)
    missing = requests.post(f"{server.url}/v1/chat/completions", json={}, headers=headers, timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
