"""Which routes run the model is declared on the routes themselves (``dependencies=[RUNS_MODEL]``);
the app's admission gate refuses exactly those before reading a body when the queue is full."""

from __future__ import annotations

from soundsift.serving.app import API_ROUTERS, model_paths


def test_the_model_routes_are_the_routes_that_declare_it():
    assert model_paths(API_ROUTERS) == {
        "/api/classify",
        "/api/classify/batch",
        "/api/detect",
        "/api/embed/audio",
        "/api/embed/text",
        "/api/search",
        "/api/adapters",  # teaching embeds clips, an uploaded adapter's fingerprint is checked
        "/v1/embeddings",
        "/v1/embeddings_audio",
    }
