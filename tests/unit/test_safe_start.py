"""Engines sharing a GPU start one at a time; other GPUs do not wait."""

from __future__ import annotations

import asyncio
import threading

from deployments.llm.safe_start import lock_path, serialized_start


def test_lock_names_follow_the_gpu_set(tmp_path):
    assert lock_path(["0"], tmp_path) == lock_path(["0"], tmp_path)
    assert lock_path(["0"], tmp_path) != lock_path(["1"], tmp_path)
    assert lock_path(["1", "0"], tmp_path) == lock_path(["0", "1"], tmp_path)


def _run_engines(paths):
    """Start one fake 'engine' per path, each in its own thread and event loop."""
    events, guard = [], threading.Lock()

    def engine(name, path):
        async def start():
            async with serialized_start(path):
                with guard:
                    events.append(("start", name))
                await asyncio.sleep(0.2)  # memory profiling
                with guard:
                    events.append(("ready", name))

        asyncio.run(start())

    threads = [threading.Thread(target=engine, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return events


def test_same_gpu_starts_never_overlap(tmp_path):
    path = lock_path(["0"], tmp_path)
    events = _run_engines([path, path, path])
    # Every start is immediately followed by its own ready: no interleaving.
    for i in range(0, len(events), 2):
        assert events[i][0] == "start" and events[i + 1] == ("ready", events[i][1])


def test_different_gpus_start_together(tmp_path):
    events = _run_engines([lock_path(["0"], tmp_path), lock_path(["1"], tmp_path)])
    assert [kind for kind, _ in events[:2]] == ["start", "start"]
