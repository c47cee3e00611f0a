"""The CPU census behind ``bench cpu-share``: which process is which, and the sums."""

from __future__ import annotations

import pytest

from serve.bench.cpu_share import cpu_by_group, html_postings, process_group, with_site_chrome
from serve.bench.extract import load_corpus


@pytest.mark.parametrize("name, cmdline, group", [
    ("ray::ServeReplica:llm-graph:Ingress", "ray::ServeReplica:llm-graph:Ingress", "Ingress"),
    ("python", "ray::ServeReplica:llm-graph:Extraction", "Extraction"),
    ("ray::ServeReplica:llm-graph:Qwen3-0_6B", "", "Qwen3-0_6B"),
    ("VLLM::EngineCore", "VLLM::EngineCore", "vLLM engines"),
    ("ray::ProxyActor", "ray::ProxyActor", "HTTP proxy"),
    ("ray::ServeController", "ray::ServeController", "Serve controller"),
    ("raylet", "/work/.venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_id=x", "Ray daemons"),
    ("ray::DashboardA", "ray::DashboardAgent", "Ray daemons"),
    ("ray::RuntimeEnv", "ray::RuntimeEnvAgent", "Ray daemons"),
    ("gcs_server", "/x/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/ray", "Ray daemons"),
    ("ray::IDLE", "ray::IDLE", "idle Ray workers"),
    ("python", "/w/.venv/bin/python -m vllm.entrypoints.openai.api_server --model /m --port 9", "vLLM API server"),
    ("bash", "bash -c make test", None),
    ("python", "python -m pytest tests/unit", None),
])
def test_processes_are_grouped_by_their_title(name, cmdline, group):
    assert process_group(name, cmdline) == group


def test_cpu_is_summed_per_group_from_the_difference_of_two_censuses():
    before = {1: ("Ingress", 10.0), 2: ("Extraction", 5.0), 3: ("Extraction", 1.0), 9: ("HTTP proxy", 2.0)}
    after = {1: ("Ingress", 10.5), 2: ("Extraction", 7.0), 3: ("Extraction", 2.5), 4: ("Extraction", 0.25)}
    assert cpu_by_group(before, after) == {"Extraction": 3.75, "Ingress": 0.5}


def test_the_batch_is_the_corpus_html_postings_in_site_chrome():
    pages = html_postings(100, 16)
    originals = [doc["document"] for doc in load_corpus() if doc["kind"] != "text"]
    assert len(pages) == 100 and len(set(pages)) == len(originals)
    assert all(15 * 1024 <= len(page) <= 16 * 1024 for page in pages)
    # The posting itself is untouched: its markup is all there, in order, around the chrome.
    for page, original in zip(pages, originals):
        head, tail = original.split("<body>", 1)
        assert page.startswith(head + "<body>") and page.endswith("</body>" + tail.split("</body>", 1)[1])
    assert with_site_chrome("<p>x</p>", 1) == "<p>x</p>", "no room for chrome: the page as it is"
