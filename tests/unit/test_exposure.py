"""The loopback guard and API-key sources."""

from __future__ import annotations

import pytest

from serve.exposure import exposure_problem, is_loopback
from serve.kernel.settings import Settings


@pytest.mark.parametrize("host,expected", [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.internal", False)])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_remote_without_keys_is_refused():
    problem = exposure_problem("0.0.0.0", Settings(api_keys=""))
    assert problem and "LLMGRAPH_API_KEYS" in problem


def test_loopback_keys_or_explicit_override_are_fine(tmp_path):
    assert exposure_problem("127.0.0.1", Settings()) is None
    assert exposure_problem("0.0.0.0", Settings(api_keys="k1")) is None
    assert exposure_problem("0.0.0.0", Settings(allow_unauthenticated=True)) is None



def test_an_unreadable_bind_address_fails_closed():
    problem = exposure_problem(None, Settings())
    assert problem and "could not be read" in problem
    assert exposure_problem(None, Settings(api_keys="k1")) is None
    assert exposure_problem(None, Settings(allow_unauthenticated=True)) is None


def test_keys_from_environment_and_file(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nalpha\n\n  beta  \n")
    monkeypatch.setenv("LLMGRAPH_API_KEYS", "gamma, ,delta")
    monkeypatch.setenv("LLMGRAPH_API_KEYS_FILE", str(keys))
    settings = Settings()
    assert settings.api_key_set == {"alpha", "beta", "gamma", "delta"}
    assert exposure_problem("0.0.0.0", settings) is None
