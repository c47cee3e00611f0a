"""A CPU engine computes on its own cores, its scheduler included.

vLLM's CPU engine is two processes under the LLMServer replica: ``VLLM::EngineCore``
(the scheduler) and ``VLLM::Worker`` (the model, one OpenMP thread per core of
``VLLM_CPU_OMP_THREADS_BIND``). They take turns (CPU engines schedule synchronously),
and each busy-polls the shared-memory queue while the other works, yielding the core at
every turn. Only the worker's threads are bound by vLLM: the scheduler stays free to run
on any core, so under Ray it ran on the control plane's core, spinning against the
replicas, the HTTP proxy and Ray's daemons. Every token then waited for the scheduler to
get its core back: on 2 cores the engine spent 37 CPU ms per token instead of 19, and a
token took 20 ms instead of 18.

This vLLM *general plugin* (vLLM loads it in every process it starts) pins the engine's
processes, every thread, to the cores in ``LLMGRAPH_ENGINE_CORES``: the same cores as
its OpenMP threads, so the scheduler and the model share them turn by turn and the rest
of the machine keeps the other cores. The graph sets the variable for each CPU engine
(:func:`deployments.llm.builder.engine_env`); ``bench overhead`` gives ``vllm serve``
alone the same. Only processes vLLM started are pinned (the replica, which runs the
OpenAI layer and detokenizes, keeps the control plane's cores).
"""

from __future__ import annotations

import multiprocessing

ENV_VAR = "LLMGRAPH_ENGINE_CORES"


def install() -> None:
    """Pin this process, if vLLM started it and the graph named its cores."""
    if multiprocessing.parent_process() is None:
        return  # not an engine process (the replica, or vLLM's API server)
    from serve.kernel.cpu_affinity import pin_to_cores
    from serve.kernel.settings import load_settings

    pin_to_cores(load_settings().engine_cores)  # every thread, those started before the plugin too
