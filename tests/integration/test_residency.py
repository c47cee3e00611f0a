"""More models than the memory holds: the ``cpu-swap`` graph under ``serve run``.

Three LLMs, a host-memory budget that holds two awake: the extractor is resident, the
reasoner and the heavy model are woken on demand, evicted least-recently-used, and the
heavy one sleeps when idle. On CPU a model sleeps by ``stop`` (its engine process exits).
The engines are counted from outside with psutil, so "never more than two awake" is the
machine's word, not only the manager's. This module deploys its own graph; the conftest
runs it before the shared ``cpu`` graph starts (both at once would not fit 2 cores).
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import yaml

from serve.kernel.config import load_profile
from tests.support.graph import ROOT, metrics_text, serve_details, start_graph, stop_graph
from tests.support.profiles import llm_entry

pytestmark = pytest.mark.integration

PROFILE = "cpu-swap"
EXTRACTOR, REASONER, HEAVY = "qwen3-tiny-extractor", "qwen3-tiny-reasoner", "qwen3-tiny-heavy"
BUDGET_AWAKE = 2


def engines() -> list[psutil.Process]:
    """The vLLM engine-core processes alive on this machine (one per awake model)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or ""
        except psutil.Error:
            continue
        if title.startswith("VLLM::EngineCore"):
            found.append(proc)
    return found


def engine_rss_gib() -> float:
    """Resident memory of every vLLM process (engine cores and their workers)."""
    total = 0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if " ".join(proc.info["cmdline"] or []).startswith("VLLM::"):
                total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 1024 ** 3


class EngineCensus:
    """Samples the engine count every 0.2 s for the whole module."""

    def __init__(self) -> None:
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, len(engines()))
            self.samples += 1
            time.sleep(0.2)

    def __enter__(self) -> "EngineCensus":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(5)


#: The heavy model's engine start waits this long first (LLMGRAPH_ENGINE_START_DELAY_S):
#: every wake of it outlasts three of its replica's health-check periods.
SLOW_START_S = 8.0


def slowed_profile(workdir) -> str:
    """cpu-swap, with the heavy model's engine start slowed on purpose (a busy machine, a
    14B model on a GPU): a profile file of the test's own."""
    raw = yaml.safe_load((ROOT / "configs" / f"{PROFILE}.yaml").read_text())
    heavy = llm_entry(raw, "heavy")
    heavy["env"] = {**heavy.get("env", {}), "LLMGRAPH_ENGINE_START_DELAY_S": str(SLOW_START_S)}
    assert SLOW_START_S > 3 * load_profile(PROFILE).llm("heavy").scaling.health_check_period_s
    path = workdir / f"{PROFILE}-slow-heavy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def swap(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("swap-graph")
    env = {"LLMGRAPH_GPU_TELEMETRY_FILE": str(workdir / "gpu-telemetry.json"), "LLMGRAPH_DATA_DIR": str(workdir / "data")}
    graph = start_graph(workdir, profile=slowed_profile(workdir), env=env)
    census = EngineCensus().__enter__()
    yield graph, census
    census.__exit__()
    stop_graph(graph)
    assert not graph.server_errors, f"requests answered 5xx: {graph.server_errors}"


@pytest.fixture(scope="module")
def http(swap):
    graph, _ = swap
    # Requests wait up to the profile's wake_timeout_s (a turn and a wake) before the graph answers.
    timeout = load_profile(PROFILE).residency.wake_timeout_s + 60
    with httpx.Client(base_url=graph.base_url, timeout=timeout, event_hooks={"response": [graph.record]}) as client:
        yield client


def states(http) -> dict[str, dict]:
    return {card["id"]: card["metadata"] for card in http.get("/v1/models").json()["data"]}


def chat(http, model: str, **extra):
    return http.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, **extra})


def asleep(http, model: str) -> None:
    answer = http.post(f"/v1/models/{model}/sleep", json={})
    assert answer.status_code == 200, answer.text
    assert states(http)[model]["state"] == "asleep"


def test_models_show_residency_and_state(http):
    cards = states(http)
    assert cards[EXTRACTOR]["residency"] == "resident" and cards[EXTRACTOR]["state"] == "awake"
    for model in (REASONER, HEAVY):
        assert cards[model]["residency"] == "on_demand" and cards[model]["sleeps_by"] == "stop"
        assert cards[model]["state"] in ("asleep", "awake")
    assert cards["auto"]["routes_to"] == [EXTRACTOR, REASONER, HEAVY]


def test_a_request_to_a_sleeping_model_wakes_it_and_says_how_long_it_waited(http):
    asleep(http, HEAVY)
    answer = chat(http, HEAVY)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == HEAVY
    assert int(answer.headers["x-model-wake-ms"]) > 0
    assert states(http)[HEAVY]["state"] == "awake"
    again = chat(http, HEAVY)
    assert again.status_code == 200 and "x-model-wake-ms" not in again.headers, "an awake model makes nobody wait"


def heavy_replica_pids(graph) -> set[int]:
    return {replica["pid"] for replica in serve_details(graph)["deployments"]["Heavy"]["replicas"]
            if replica["state"] == "RUNNING"}


def test_a_wake_slower_than_three_health_checks_costs_no_replica_and_its_loop_stays_free(http, swap):
    graph, _ = swap
    asleep(http, HEAVY)
    before = heavy_replica_pids(graph)
    with ThreadPoolExecutor(1) as pool:
        waking = pool.submit(chat, http, HEAVY)
        statuses = []
        while not waking.done():
            # The ingress probes every deployment's health check (2 s timeout); a replica
            # whose event loop is held by the engine start would read "down" for the whole wake.
            statuses.append(http.get("/readyz").json()["deployments"]["heavy"])
            time.sleep(0.5)
        answer = waking.result()
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["x-model-wake-ms"]) >= SLOW_START_S * 1000
    assert statuses.count("ok") >= len(statuses) // 2, f"the replica did not answer while its engine started: {statuses}"
    assert heavy_replica_pids(graph) == before, "the replica that woke is the one that was there"


def test_four_concurrent_requests_to_a_sleeping_model_share_one_wake(http):
    asleep(http, REASONER)
    wakes_before = states(http)[REASONER]["wakes"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: chat(http, REASONER), range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert all(int(a.headers["x-model-wake-ms"]) > 0 for a in answers)
    assert states(http)[REASONER]["wakes"] == wakes_before + 1


def test_waking_a_model_evicts_the_least_recently_used_idle_one(http, swap):
    http.post(f"/v1/models/{REASONER}/wake", json={}).raise_for_status()
    http.post(f"/v1/models/{HEAVY}/wake", json={}).raise_for_status()  # the reasoner sleeps for it
    cards = states(http)
    assert cards[HEAVY]["state"] == "awake" and cards[REASONER]["state"] == "asleep"
    assert len(engines()) == BUDGET_AWAKE


def test_sleep_returns_the_engines_memory(http):
    http.post(f"/v1/models/{REASONER}/wake", json={}).raise_for_status()
    before = engine_rss_gib()
    answer = http.post(f"/v1/models/{REASONER}/sleep", json={})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    freed = before - engine_rss_gib()
    assert result["mechanism"] == "stop" and result["after"]["rss_gib"] < 0.1
    assert freed >= 0.75 * result["before"]["rss_gib"], (before, freed, result)
    assert answer.json()["state"] == "asleep"


def test_a_wake_whose_room_is_busy_waits_its_turn_instead_of_a_503(http, swap):
    """The heavy model's room is held by the reasoner with a request in flight: the heavy
    request waits (counted in ``waiting``), the reasoner finishes and sleeps, one wake
    serves it. (Only resident models holding the room make a 503: tests/unit.)"""
    graph, _ = swap
    http.post(f"/v1/models/{REASONER}/wake", json={}).raise_for_status()  # the heavy model sleeps for it
    # Four sequences of 1,536 tokens: seconds of decoding, while the heavy request arrives in milliseconds.
    body = {"model": REASONER, "messages": [{"role": "user", "content": "count"}], "max_tokens": 1536, "n": 4,
            "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=graph.base_url, timeout=http.timeout) as streaming, ThreadPoolExecutor(1) as pool:
        with streaming.stream("POST", "/v1/chat/completions", json=body) as stream:
            lines = stream.iter_lines()
            next(lines)
            busy = states(http)[REASONER]["in_flight"]
            heavy = pool.submit(chat, http, HEAVY)
            seen_waiting = 0
            while not heavy.done() and states(http)[REASONER]["in_flight"] and not seen_waiting:
                seen_waiting = states(http)[HEAVY]["waiting"]
                time.sleep(0.1)
            for _ in lines:
                pass
        answer = heavy.result()
    assert busy == 1, "the reasoner had the request in flight when the heavy model was asked for"
    assert seen_waiting == 1, "the heavy request waited for the reasoner's room"
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["x-model-wake-ms"]) > 0
    cards = states(http)
    assert cards[HEAVY]["state"] == "awake" and cards[REASONER]["state"] == "asleep"


def test_twenty_requests_alternating_between_two_models_take_turns(http):
    """What swapped on every request (or answered 503) before turns: ten requests for each
    of two models that cannot both be awake, all at once, are all answered, by one wake
    of each (two, counted by the manager) rather than up to twenty."""
    before = {m: states(http)[m]["wakes"] for m in (REASONER, HEAVY)}
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: chat(http, (REASONER, HEAVY)[i % 2]), range(20)))
    assert [a.status_code for a in answers] == [200] * 20, [a.text[:200] for a in answers if a.status_code != 200]
    wakes = {m: states(http)[m]["wakes"] - before[m] for m in (REASONER, HEAVY)}
    assert sum(wakes.values()) <= 2, f"wakes per model: {wakes}"
    assert sorted(a.json()["model"] for a in answers) == sorted([REASONER, HEAVY] * 10)


def test_an_idle_model_sleeps_after_its_timeout(http):
    idle_sleep_s = states(http)[HEAVY]["idle_sleep_s"]
    http.post(f"/v1/models/{HEAVY}/wake", json={}).raise_for_status()
    deadline = time.monotonic() + idle_sleep_s + 30
    while time.monotonic() < deadline and states(http)[HEAVY]["state"] != "asleep":
        time.sleep(2)
    assert states(http)[HEAVY]["state"] == "asleep"


def test_operators_are_told_what_they_cannot_do(http):
    resident = http.post(f"/v1/models/{EXTRACTOR}/sleep", json={})
    assert resident.status_code == 400 and resident.json()["error"]["code"] == "model_resident"
    unknown = http.post("/v1/models/no-such-model/wake", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_the_awake_count_never_exceeded_the_budget_and_the_metrics_say_so(swap, http):
    graph, census = swap
    assert census.samples > 100
    assert census.most <= BUDGET_AWAKE, f"{census.most} engines were alive at once"
    names = ("llmgraph_model_state", "llmgraph_model_switches_total", "llmgraph_model_wake_seconds")
    heavy_asleep = re.compile(rf'llmgraph_model_state{{[^}}]*model="{HEAVY}"[^}}]*state="asleep"[^}}]*}} 1\.0')
    assert states(http)[HEAVY]["state"] == "asleep"
    deadline = time.monotonic() + 60  # Ray exports metrics every few seconds; the gauges are set every 10 s
    while True:
        text = metrics_text(graph)
        if (all(name in text for name in names) and heavy_asleep.search(text)) or time.monotonic() > deadline:
            break
        time.sleep(3)
    for name in names:
        assert name in text, name
    assert 'direction="wake"' in text
    assert heavy_asleep.search(text), "the gauge says the heavy model is asleep"
