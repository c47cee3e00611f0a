"""A keyless graph on loopback refuses what a web page can send: foreign origins, foreign
Host names (DNS rebinding) and POSTs a browser sends without a preflight."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from ray.serve.llm.ingress import make_fastapi_ingress

from serve.ingress import ENDPOINTS, Ingress, build_ingress_app
from serve.kernel.settings import Settings

SLEEP = "/v1/models/some-model/sleep"


def client(keys: frozenset[str] = frozenset(), **settings) -> TestClient:
    app = build_ingress_app(Settings(**settings), keys=keys)
    make_fastapi_ingress(Ingress, endpoint_map=ENDPOINTS, app=app)
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.mark.parametrize("headers,body", [
    ({}, None),  # a bodiless POST: <form method=post> or fetch(..., {mode: "no-cors"})
    ({"content-type": "text/plain"}, b"{}"),
    ({"content-type": "application/x-www-form-urlencoded"}, b"a=b"),
    ({"content-type": "multipart/form-data; boundary=x"}, b"--x--"),
])
def test_a_post_a_page_can_send_without_asking_is_refused(headers, body):
    answer = client().post(SLEEP, content=body, headers=headers)
    assert answer.status_code == 415 and answer.json()["error"]["code"] == "json_required"
    # Ray Serve's proxy adds x-request-id to every request: it proves no preflight.
    answer = client().post(SLEEP, content=body, headers={**headers, "x-request-id": "from-the-proxy"})
    assert answer.status_code == 415, "the proxy's own x- header must not open the guard"


def test_a_foreign_origin_or_host_is_refused_whatever_the_request():
    guarded = client()
    for origin in ("https://evil.example", "null", "http://192.168.1.10:8000"):
        answer = guarded.get("/v1/models", headers={"Origin": origin})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "foreign_origin", origin
    rebound = guarded.get("/v1/models", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "foreign_host"


def test_clients_that_send_json_or_a_preflighted_header_pass_the_guard():
    guarded = client()
    for headers in ({"content-type": "application/json"}, {"x-client-name": "r1"}, {"Origin": "http://localhost:3000",
                                                                                   "content-type": "application/json"}):
        answer = guarded.post(SLEEP, content=b"{}", headers=headers)
        assert answer.status_code not in (403, 415), (headers, answer.status_code)
    assert guarded.get("/healthz", headers={"Host": "[::1]:8000"}).status_code != 403, "the guard let it through"


def test_keys_or_chosen_keyless_exposure_change_what_is_guarded():
    keyed = client(keys=frozenset({"k"}))
    answer = keyed.post(SLEEP, headers={"Authorization": "Bearer k", "Origin": "https://evil.example"})
    assert answer.status_code not in (403, 415), "with keys, the key is the guard"
    exposed = client(allow_unauthenticated=True)
    assert exposed.get("/healthz", headers={"Host": "gpu-box.lan:8000"}).status_code != 403
    assert exposed.post(SLEEP).status_code == 415, "a page on the LAN still cannot POST without asking"
