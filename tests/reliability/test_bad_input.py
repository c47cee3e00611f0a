"""Bad input gets a clear 4xx in the OpenAI envelope: never a 500, never a hang."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def assert_envelope(response, status: int, *, code: str | None = None, param: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    assert "Internal exception" not in error["message"]
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param
    return error


CHAT = "/v1/chat/completions"


def test_unknown_model_is_404(http):
    r = http.post(CHAT, json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})
    assert_envelope(r, 404, code="model_not_found", param="model")


def test_unknown_model_through_openai_client_raises_not_found(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])


def test_malformed_json_is_400(http):
    r = http.post(CHAT, content=b'{"model": "auto", "messages": [', headers={"content-type": "application/json"})
    assert_envelope(r, 400)


def test_missing_messages_is_400(http):
    assert_envelope(http.post(CHAT, json={"model": "auto"}), 400)


def test_wrong_types_are_400(http):
    assert_envelope(http.post(CHAT, json={"model": "auto", "messages": "hello"}), 400)
    assert_envelope(http.post(CHAT, json={"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}), 400)


def test_max_tokens_over_the_limit_is_400(http):
    r = http.post(CHAT, json={"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000})
    assert_envelope(r, 400, code="max_tokens_exceeded", param="max_tokens")


def test_embedding_model_on_chat_is_400(http):
    r = http.post(CHAT, json={"model": "all-minilm-l6-v2", "messages": [{"role": "user", "content": "x"}]})
    assert_envelope(r, 400, code="model_not_supported")


def test_engine_rejections_stay_4xx_and_scrubbed(http):
    # A prompt longer than max_model_len: vLLM rejects it; the client sees a clean 400.
    long_prompt = "word " * 5000
    r = http.post(CHAT, json={"model": "qwen3-tiny-extractor", "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 4})
    assert_envelope(r, 400)


def test_body_over_the_limit_is_413(http):
    r = http.post(CHAT, content=b"x" * (2 * 1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert_envelope(r, 413)


def test_bad_embeddings_requests(http):
    url = "/v1/embeddings"
    assert_envelope(http.post(url, json={"model": "all-minilm-l6-v2", "input": []}), 400, param="input")
    assert_envelope(http.post(url, json={"model": "all-minilm-l6-v2", "input": [[1, 2, 3]]}), 400, param="input")
    assert_envelope(http.post(url, json={"model": "all-minilm-l6-v2", "input": ["x"] * 257}), 400, code="too_many_inputs")
    assert_envelope(http.post(url, json={"model": "all-minilm-l6-v2", "input": "x", "dimensions": 12}), 400, param="dimensions")
    assert_envelope(http.post(url, json={"model": "nope", "input": "x"}), 404)


def test_unknown_route_and_method(http):
    assert_envelope(http.get("/v1/nothing-here"), 404)
    assert_envelope(http.get(CHAT), 405)


def test_service_still_answers_after_bad_input(http):
    r = http.post(CHAT, json={"model": "auto", "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 3})
    assert r.status_code == 200
