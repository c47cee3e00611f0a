"""With API keys configured, no route of the real ingress app answers without one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from ray.serve.llm.ingress import make_fastapi_ingress

from serve.ingress import ENDPOINTS, Ingress, build_ingress_app
from serve.kernel.settings import Settings


def test_every_route_but_healthz_requires_a_key():
    app = build_ingress_app(Settings(), keys=frozenset({"k1", "k2"}))
    make_fastapi_ingress(Ingress, endpoint_map=ENDPOINTS, app=app)  # registers the real routes
    client = TestClient(app, raise_server_exceptions=False)
    checked = 0
    for route in app.routes:
        path = route.path.replace("{model:path}", "some-model")
        for method in sorted(route.methods - {"HEAD"}):
            response = client.request(method, path, json={})
            if route.path == "/healthz":
                assert response.status_code != 401
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            if path.startswith("/v1/messages"):  # Anthropic's routes answer in Anthropic's error shape
                assert response.json()["error"]["type"] == "authentication_error"
            else:
                assert response.json()["error"]["code"] == "invalid_api_key"
            checked += 1
            for wrong_key in ({"Authorization": "Bearer nope"}, {"x-api-key": "nope"}):
                wrong = client.request(method, path, json={}, headers=wrong_key)
                assert wrong.status_code == 401
    assert checked >= 8  # models, model, chat, completions, embeddings, route, readyz, docs...


def test_anthropic_clients_key_is_taken_from_x_api_key():
    app = build_ingress_app(Settings(), keys=frozenset({"k1"}))
    make_fastapi_ingress(Ingress, endpoint_map=ENDPOINTS, app=app)
    client = TestClient(app, raise_server_exceptions=False)
    # The key is accepted: what follows is the route's own answer (no graph behind it here), not a 401.
    assert client.get("/v1/models", headers={"x-api-key": "k1"}).status_code != 401
    assert client.post("/v1/messages", json={}, headers={"x-api-key": "k1"}).status_code != 401


def test_no_secret_is_pickled_into_the_graph(monkeypatch):
    """Serve checkpoints every deployment's bound arguments (and GCS fault tolerance puts
    them in Redis): the API keys and the provider key must not be among them."""
    from ray import cloudpickle

    from serve.app import build_graph
    from serve.kernel.config import load_profile
    from serve.kernel.settings import load_settings
    from tests.support.models import PROFILE

    monkeypatch.setenv("LLMGRAPH_API_KEYS", "sekrit-key-123")
    monkeypatch.setenv("LLMGRAPH_FALLBACK_API_KEY", "provider-key-456")
    monkeypatch.setenv("LLMGRAPH_FALLBACK_URL", "http://127.0.0.1:9/v1")
    blob = cloudpickle.dumps(build_graph(load_profile(PROFILE)))
    assert b"sekrit-key-123" not in blob and b"provider-key-456" not in blob
    settings = load_settings()
    assert settings.api_key_set == {"sekrit-key-123"}  # the replica still reads them
    assert "sekrit" not in repr(settings) and "provider-key" not in str(settings.model_dump())


def test_operator_actions_need_an_admin_key(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("# operators\nops-key admin\nteam-key\n")
    monkeypatch.setenv("LLMGRAPH_API_KEYS_FILE", str(keys))
    app = build_ingress_app(Settings())  # the keys are read as the replica reads them
    make_fastapi_ingress(Ingress, endpoint_map=ENDPOINTS, app=app)
    client = TestClient(app, raise_server_exceptions=False)
    team, ops = ({"Authorization": f"Bearer {k}"} for k in ("team-key", "ops-key"))
    for method, path in (("POST", "/v1/models/some-model/sleep"), ("POST", "/v1/models/org/some-model/wake"),
                         ("DELETE", "/v1/collections/handbook")):
        refused = client.request(method, path, json={}, headers=team)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required", (method, path)
        assert client.request(method, path, json={}, headers=ops).status_code not in (401, 403), (method, path)
    # Everything else stays open to every key.
    assert client.request("DELETE", "/v1/collections/handbook/documents/a", headers=team).status_code not in (401, 403)
    assert client.post("/v1/collections/handbook/search", json={}, headers=team).status_code not in (401, 403)


def test_a_single_key_is_admin_and_a_bad_scope_is_refused(tmp_path):
    assert Settings(api_keys="only-key").admin_key_set == {"only-key"}
    assert Settings(api_keys="k1,k2").admin_key_set == frozenset(), "several keys: admin only when marked"
    keys = tmp_path / "keys"
    keys.write_text("k1 root\n")
    with pytest.raises(ValueError, match="line 1") as info:
        Settings(api_keys_file=keys).api_key_set
    assert "k1" not in str(info.value), "the error names the line, never the key"
