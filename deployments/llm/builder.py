"""Build the extractor and reasoner as ``ray.serve.llm`` LLMServer deployments.

Ray Serve LLM already runs the vLLM engine, its OpenAI protocol (chat, completions,
streaming, ``response_format``, tools, reasoning), health checks and engine metrics. This
module only translates a profile's :class:`~serve.kernel.config.LLMSpec` into an ``LLMConfig``,
keeping two things consistent that users otherwise get wrong by hand: the Ray placement
(CPU bundles, GPU fraction) and vLLM's own memory share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from deployments.llm.engine_cores import ENV_VAR as ENGINE_CORES_ENV
from deployments.llm.engine_watchdog import ENV_VAR as ENGINE_WATCHDOG_ENV
from serve.kernel.config import LLMSpec
from serve.kernel.core_plan import parse_cores

# The LLMServer replica actor itself needs a sliver of CPU; the engine's bundle gets the
# rest of the profile's num_cpus.
_REPLICA_ACTOR_CPUS = 0.05
def llm_config_dict(spec: LLMSpec, *, device: str, model_path: str, extra_env: Optional[dict[str, str]] = None,
                    wake_timeout_s: float = 180.0) -> dict[str, Any]:
    """The ``LLMConfig`` (as a dict) for one LLM node.

    Args:
        spec: The profile's description of the model.
        device: ``cpu`` or ``gpu``, from the profile.
        model_path: Resolved weights location (local path or hub id).
        wake_timeout_s: The profile's wake budget (``residency.wake_timeout_s``): the
            replica's health-check timeout unless the model's scaling sets one.
        extra_env: More environment for the replica and its engine (one event loop,
            :mod:`serve.kernel.serve_loops`; the control plane's cores,
            :func:`serve.kernel.core_plan.control_plane_env`).
    """
    engine_kwargs: dict[str, Any] = {
        "max_model_len": spec.max_model_len,
        "max_num_seqs": spec.max_num_seqs,
        **spec.engine_kwargs,
    }
    # Interactive first: batch lines go in with a lower priority (batch.line_priority) and
    # the engine schedules them after people's requests; equal priorities keep arrival order.
    engine_kwargs.setdefault("scheduling_policy", "priority")
    if spec.tool_call_parser:
        engine_kwargs.setdefault("enable_auto_tool_choice", True)
        engine_kwargs.setdefault("tool_call_parser", spec.tool_call_parser)
    if spec.reasoning_parser:
        engine_kwargs.setdefault("reasoning_parser", spec.reasoning_parser)
    if spec.thinking_budget_tokens:
        # The engine enforces thinking_token_budget by forcing the end-of-thinking tag.
        engine_kwargs.setdefault(
            "reasoning_config",
            {
                "reasoning_parser": spec.reasoning_parser,
                "reasoning_start_str": "<think>",
                "reasoning_end_str": "</think>",
            },
        )

    engine_cpus = max(spec.resources.num_cpus - _REPLICA_ACTOR_CPUS, 0.01)
    if device == "gpu":
        # vLLM's share of GPU memory is the Ray fraction, so the scheduler's view and
        # the engine's allocation can never disagree.
        engine_kwargs.setdefault("gpu_memory_utilization", spec.resources.num_gpus)
        if spec.on_demand and spec.mechanism(device) != "stop":
            engine_kwargs.setdefault("enable_sleep_mode", True)
        bundle = {"CPU": engine_cpus, "GPU": spec.ray_gpus}
        accelerator = {"kind": "gpu"}
    else:
        bundle = {"CPU": engine_cpus}
        accelerator = {"kind": "cpu"}
    # The replica and its engine share the bundle: on the node group's nodes only.
    bundle.update(spec.resources.custom())

    deployment_config = {
        # A wake runs in this replica; however slow the machine, its health checks wait as
        # long as a request waits for the wake.
        "health_check_timeout_s": wake_timeout_s,
        **spec.scaling.deployment_options(),
        "ray_actor_options": {"num_cpus": _REPLICA_ACTOR_CPUS},
    }
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.model_id, "model_source": model_path},
        "engine_kwargs": engine_kwargs,
        "accelerator_config": accelerator,
        "placement_group_config": {"bundles": [bundle], "strategy": "PACK"},
        "deployment_config": deployment_config,
    }
    # The engine processes vLLM starts inherit this and watch the replica (engine_watchdog).
    config["runtime_env"] = {"env_vars": {**engine_env(spec, device), **(extra_env or {}), ENGINE_WATCHDOG_ENV: "1"}}
    config["callback_config"] = {
        "callback_class": "deployments.llm.callbacks.EngineStartCallback",
        "callback_kwargs": {"local_weights": Path(model_path).is_dir()},
    }
    return config


def engine_env(spec: LLMSpec, device: str) -> dict[str, str]:
    """The engine's environment: the profile's ``env``, and on CPU profiles the cores its
    OpenMP threads bind to (one thread per core) and its processes are pinned to
    (:mod:`deployments.llm.engine_cores`)."""
    env = {key: str(value) for key, value in spec.env.items()}
    if device == "cpu" and spec.cpu_cores:
        cores = ",".join(map(str, parse_cores(spec.cpu_cores)))
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores
        env[ENGINE_CORES_ENV] = cores
    return env


def build_llm_node(spec: LLMSpec, *, device: str, cache_dir: Path, gpu_memory_gib: Optional[float] = None,
                   extra_env: Optional[dict[str, str]] = None, wake_timeout_s: float = 180.0):
    """Bind one LLMServer deployment named after its role (``Extractor``, ``Heavy``...).

    Every model's server reports its engine's memory to the residency manager, and an
    on-demand model's server starts without an engine and sleeps and wakes it
    (:mod:`deployments.llm.swappable`); on a GPU every engine starts while no other
    engine on its card is starting.

    Returns:
        The bound ``Application`` to pass to the ingress.
    """
    from ray.serve.llm import LLMConfig, build_llm_deployment

    from deployments.llm.engine import OffLoopStartEngine
    from deployments.llm.lifecycle import EngineLifecycle
    from deployments.llm.swappable import SwappableLLMServer
    from serve.kernel.sources import resolve_source

    model_path = resolve_source(spec.source, cache_dir=cache_dir)
    fields = llm_config_dict(spec, device=device, model_path=model_path, extra_env=extra_env, wake_timeout_s=wake_timeout_s)
    budget = spec.resources.num_gpus * gpu_memory_gib if device == "gpu" and gpu_memory_gib else None
    lifecycle = EngineLifecycle(start_awake=not spec.on_demand, mechanism=spec.mechanism(device),
                                serialize_start=device == "gpu", memory_budget_gib=budget)
    fields["experimental_configs"] = lifecycle.into(fields.get("experimental_configs") or {})
    return build_llm_deployment(
        LLMConfig(**fields),
        name_prefix="",
        override_serve_options={"name": spec.deployment_name},
        deployment_cls=SwappableLLMServer,
        # Ray Serve LLM's engine injection point: the engine starts off the replica's loop.
        bind_kwargs={"engine_cls": OffLoopStartEngine},
    )
