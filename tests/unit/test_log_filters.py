"""Successful health probes stay out of the access log; everything else stays in."""

from __future__ import annotations

import logging

from serve.kernel.log_filters import ProbeFilter, quiet_probes


def record(message: str, route: str = "") -> logging.LogRecord:
    # Serve leaves the route empty for handle calls; the method is in the message.
    entry = logging.LogRecord("ray.serve", logging.INFO, __file__, 1, message, None, None)
    entry.route = route
    return entry


def test_only_successful_probe_calls_are_dropped():
    keep = ProbeFilter().filter
    assert not keep(record("CALL check_health OK 2.7ms"))
    assert not keep(record("CALL admission OK 0.4ms"))
    assert keep(record("CALL check_health ERROR 2000.1ms")), "a failing probe is news"
    assert keep(record("CALL decide OK 7.9ms"))
    assert keep(record("POST /v1/chat/completions 200 31.0ms", "/v1/chat/completions"))
    assert keep(record("deployment reasoner is now unavailable"))


def test_installing_twice_adds_one_filter():
    logger = logging.getLogger("ray.serve")
    before = len(logger.filters)
    quiet_probes()
    quiet_probes()
    assert len([f for f in logger.filters if isinstance(f, ProbeFilter)]) == 1
    assert len(logger.filters) <= before + 1
