"""Ray Serve switches the graph's replicas run with: one event loop per replica.

By default a Serve replica runs its user code on an event loop in a second thread, and
its outgoing handle calls on a router loop in a third; every request, and every chunk
of a stream, crosses from one thread to the next and back, and each crossing waits for
the other thread to be scheduled. On the CPU profile the control plane has one core,
and at 8 streaming clients it is full: the HTTP proxy, the ingress and the LLM replica
each handle every chunk. Ray's own throughput mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED``)
turns both off; the graph turns off just these two.

The replicas get them from each deployment's runtime environment, so a plain ``serve run
serve_config.yaml`` has them. Ray's HTTP proxy reads them from the environment ``serve
run`` starts in, which the graph cannot set: ``make serve``, the KubeRay manifests, the
test suite and the benchmarks start it with them. What it changes (throughput and time to
first token under load, not CPU per token) is measured by ``python -m serve bench
overhead`` and written in the README ("Measured"), not here, where it would go stale.

The cost: user code shares the loop with the replica's own control calls (health
checks, queue-length probes, metrics), so nothing in the graph may block its loop; its
blocking work runs in threads (the encoders, collection files, the engine-start lock).
Ray Serve LLM builds a vLLM engine synchronously; the graph's engines are built in a
thread instead (:mod:`deployments.llm.engine`), so a replica whose on-demand model is
being woken still answers its health checks.
"""

from __future__ import annotations

SINGLE_LOOP_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}


def as_shell_assignments() -> str:
    """``NAME=value`` pairs for ``env``: how the Makefile starts ``serve run`` with the
    switches without writing them a second time."""
    return " ".join(f"{name}={value}" for name, value in SINGLE_LOOP_ENV.items())


if __name__ == "__main__":
    print(as_shell_assignments())
