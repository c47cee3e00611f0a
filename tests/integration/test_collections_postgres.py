"""The collection suite again, on a graph whose collections live in PostgreSQL with pgvector.

Every test of ``test_collections.py`` runs here unchanged against a ``cpu`` graph whose
profile says ``collections.backend: postgres`` with two Collections replicas (stateless:
any of them answers any request), the database URL read from a secret file. The server is
the suite's own (``tests/support/postgres.py``).
"""

from __future__ import annotations

import httpx
import pytest
import yaml

from serve.kernel.config import CONFIGS_DIR
from tests.integration.test_collections import *  # noqa: F401,F403 - the same tests, on this module's graph
from tests.support.graph import serve_details, start_graph, stop_graph
from tests.support.postgres import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_graph(tmp_path_factory, postgres_url):
    workdir = tmp_path_factory.mktemp("postgres-graph")
    raw = yaml.safe_load((CONFIGS_DIR / "cpu.yaml").read_text())
    raw["collections"].update(backend="postgres", replicas=2)
    profile = workdir / "cpu-postgres.yaml"
    profile.write_text(yaml.safe_dump(raw))
    secret = workdir / "postgres-url"
    secret.write_text(fresh_database(postgres_url, "graph_collections"))
    secret.chmod(0o600)
    env = {"LLMGRAPH_GPU_TELEMETRY_FILE": str(workdir / "gpu-telemetry.json"), "LLMGRAPH_DATA_DIR": str(workdir / "data"),
           "LLMGRAPH_POSTGRES_URL_FILE": str(secret)}
    graph = start_graph(workdir, profile=str(profile), env=env)
    yield graph
    stop_graph(graph)
    assert not graph.server_errors, f"requests answered 5xx: {graph.server_errors}"


@pytest.fixture(scope="module")
def index_kind() -> str:
    return "pgvector-hnsw"


@pytest.fixture(scope="module")
def http(pg_graph):
    with httpx.Client(base_url=pg_graph.base_url, timeout=120, event_hooks={"response": [pg_graph.record]}) as client:
        yield client


@pytest.fixture(scope="module")
def openai_client(pg_graph):
    from openai import OpenAI

    hooked = httpx.Client(timeout=120, event_hooks={"response": [pg_graph.record]})
    yield OpenAI(base_url=pg_graph.api_url, api_key="unused-locally", http_client=hooked, max_retries=0)
    hooked.close()


def test_the_collections_replicas_share_one_store(pg_graph, http):
    """Two replicas, no state of their own: whichever answers, a write is seen by all."""
    replicas = serve_details(pg_graph)["deployments"]["Collections"]["replicas"]
    assert len([r for r in replicas if r["state"] == "RUNNING"]) == 2
    for i in range(6):
        assert http.post("/v1/collections/shared/documents", json={"documents": [
            {"id": f"s{i}", "text": f"Shared note number {i}.", "metadata": {"i": i}}]}).status_code == 200
        assert http.get(f"/v1/collections/shared/documents/s{i}").status_code == 200
    assert http.get("/v1/collections/shared").json()["documents"] == 6
