"""Shared fixtures: the real graph, deployed once per session, and clients for it."""

from __future__ import annotations

import httpx
import pytest

from tests.support.graph import RunningGraph, start_graph, stop_graph


@pytest.fixture(scope="session")
def graph(tmp_path_factory) -> RunningGraph:
    """The whole ``cpu`` graph under ``serve run``; fails the suite if it has 5xx'd.

    The GPU monitor reads a telemetry file instead of NVML (there is no GPU here); the
    file is absent, so the graph sees no GPU until a test writes simulated samples.
    Collections live in the session's temporary directory.
    """
    workdir = tmp_path_factory.mktemp("graph")
    gpu_file = workdir / "gpu-telemetry.json"
    env = {"LLMGRAPH_GPU_TELEMETRY_FILE": str(gpu_file), "LLMGRAPH_DATA_DIR": str(workdir / "data")}
    running = start_graph(workdir, env=env)
    running.gpu_file = gpu_file
    print(f"\n[graph] ready after {running.ready_after_s:.1f}s at {running.base_url}")
    yield running
    stop_graph(running)
    assert not running.server_errors, f"requests answered 5xx: {running.server_errors}"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> str:
    """A PostgreSQL server with pgvector for the session (``tests/support/postgres.py``)."""
    from tests.support.postgres import postgres_server

    with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture(scope="session")
def http(graph: RunningGraph) -> httpx.Client:
    """An httpx client for the graph that records any 5xx answer."""
    with httpx.Client(
        base_url=graph.base_url, timeout=120, event_hooks={"response": [graph.record]}
    ) as client:
        yield client


@pytest.fixture(scope="session")
def openai_client(graph: RunningGraph):
    """The official OpenAI client pointed at the graph."""
    from openai import OpenAI

    hooked = httpx.Client(timeout=120, event_hooks={"response": [graph.record]})
    client = OpenAI(base_url=graph.api_url, api_key="unused-locally", http_client=hooked, max_retries=0)
    yield client
    hooked.close()


#: Modules that deploy a graph of their own. They run first, before the shared ``cpu``
#: graph starts: two graphs at once would not fit 2 cores and 24 GB.
OWN_GRAPH_MODULES = ("tests/integration/test_residency.py", "tests/integration/test_multinode.py")


def pytest_collection_modifyitems(session, config, items):
    own = [item for item in items if item.nodeid.startswith(OWN_GRAPH_MODULES)]
    items[:] = own + [item for item in items if not item.nodeid.startswith(OWN_GRAPH_MODULES)]
