"""Keep health probes out of the access log.

The ingress and the extraction replicas ask every deployment for its health (and the
monitor for the thermal state) every second. Serve writes an access-log line for each
call (``CALL check_health OK 2.7ms``), which buried the lines that matter: 1,735 of
2,759 console lines in ten minutes. Successful probes are dropped here; a failing
probe is still logged, and every request's own lines are untouched.
"""

from __future__ import annotations

import logging

#: The methods the graph calls only to watch itself, and the batch runners' polls of the
#: job store (every second per ingress replica; the lines they take are logged when answered).
PROBE_METHODS = frozenset({"check_health", "admission", "claim"})


class ProbeFilter(logging.Filter):
    """Drops Serve's access-log records of successful probe calls."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Serve's access line for a handle call: "CALL <method> <status> <latency>".
        parts = str(record.msg).split(" ", 3)
        return not (len(parts) >= 3 and parts[0] == "CALL" and parts[1] in PROBE_METHODS and parts[2] == "OK")


def quiet_probes() -> None:
    """Install :class:`ProbeFilter` on Serve's logger in this process (once)."""
    logger = logging.getLogger("ray.serve")
    if not any(isinstance(f, ProbeFilter) for f in logger.filters):
        logger.addFilter(ProbeFilter())


def install_in_engine_replica() -> None:
    """vLLM general plugin entry: the LLMServer replicas are Ray's class, so the filter
    reaches them the way the engine watchdog does (vLLM loads plugins in the replica)."""
    quiet_probes()
