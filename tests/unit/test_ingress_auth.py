"""With API keys configured, no route of the real ingress app answers without one."""

from __future__ import annotations

from fastapi.testclient import TestClient
from ray.serve.llm.ingress import make_fastapi_ingress

from serve.ingress import ENDPOINTS, Ingress, build_ingress_app
from serve.settings import Settings


def test_every_route_but_healthz_requires_a_key():
    app = build_ingress_app(Settings(api_keys="k1,k2"))
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
            assert response.json()["error"]["code"] == "invalid_api_key"
            checked += 1
            wrong = client.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
    assert checked >= 8  # models, model, chat, completions, embeddings, route, readyz, docs...
