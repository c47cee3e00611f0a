"""``build_app``: the one entry point that turns a profile into the bound Serve graph.

``serve_config.yaml`` points its ``import_path`` here (``serve.app:build_app``) and passes
``args``; they are validated, the profile is loaded and checked as a whole, offline test
checkpoints are built when missing, and every node is bound with the resources and
scaling the profile gives it.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serve.kernel.config import Profile, load_profile
from serve.kernel.core_plan import control_plane_env
from serve.kernel.serve_loops import SINGLE_LOOP_ENV
from serve.kernel.settings import Settings, load_settings


class AppArgs(BaseModel):
    """The ``args`` block of an application in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(
        "cpu", description="Profile name in configs/ or a path to a profile YAML."
    )


#: Requests the Residency replica takes at once (waiters of a wake included).
RESIDENCY_MAX_ONGOING = 4096


def _options(resources, scaling=None, env: Optional[dict[str, str]] = None, **extra: Any) -> dict[str, Any]:
    actor: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.custom():
        actor["resources"] = resources.custom()  # its node group's nodes only
    if env:
        actor["runtime_env"] = {"env_vars": env}
    options: dict[str, Any] = {"ray_actor_options": actor, **extra}
    if scaling is not None:
        options.update(scaling.deployment_options())
    return options


def build_graph(profile: Profile, settings: Optional[Settings] = None):
    """Bind every node of the graph for ``profile`` and return the ingress application."""
    from deployments.batches.deployment import Batches
    from deployments.collections.deployment import Collections
    from deployments.embedder.deployment import Embedder
    from deployments.extraction.deployment import Extraction
    from deployments.llm.builder import build_llm_node
    from deployments.monitor.deployment import GpuMonitor
    from deployments.residency.deployment import Residency
    from deployments.router.deployment import Router
    from deployments.router.in_process import InProcessRouter
    from serve.ingress import make_ingress_class
    from serve.kernel.routing import RouteTargets
    from serve.kernel.sources import resolve_source

    settings = settings or load_settings()
    # Every replica runs on one event loop (serve/kernel/serve_loops.py), and every one but the
    # Embedder (which computes) keeps off the CPU engines' cores (serve/kernel/core_plan.py).
    replica_env = {**SINGLE_LOOP_ENV, **control_plane_env(profile)}
    llms = {spec.role: build_llm_node(spec, device=profile.device, cache_dir=settings.cache_dir, extra_env=replica_env,
                                      gpu_memory_gib=profile.gpu_memory_gib, wake_timeout_s=profile.residency.wake_timeout_s)
            for spec in profile.models}
    residency = None
    if profile.on_demand:
        # One replica: it holds the ledger of what is awake. Every waiter of a wake holds one
        # of its requests open for the whole wake; Serve's default of 5 at once would queue
        # state queries (/v1/models, releases) behind them. Its methods never block the loop.
        residency = serve.deployment(
            Residency, name="Residency", num_replicas=1, max_ongoing_requests=RESIDENCY_MAX_ONGOING,
            **_options(profile.residency.resources, env=replica_env)
        ).bind(profile, llms)
    embedder_path = resolve_source(profile.embedder.source, cache_dir=settings.cache_dir)
    embedder = serve.deployment(
        Embedder, name="Embedder", **_options(profile.embedder.resources, profile.embedder.scaling, env=SINGLE_LOOP_ENV)
    ).bind(profile.embedder, embedder_path, cache_dir=str(settings.cache_dir))
    collections = None
    if profile.collections.enabled:
        # Embedded: one replica, which owns the collection files (and locks their directory);
        # postgres: stateless replicas, spread over nodes when max_replicas_per_node says so.
        spread = {"max_replicas_per_node": profile.collections.max_replicas_per_node} \
            if profile.collections.max_replicas_per_node else {}
        collections = serve.deployment(
            Collections, name="Collections", num_replicas=profile.collections.replicas,
            **_options(profile.collections.resources, env=replica_env, **spread)
        ).bind(profile.collections, profile.embedder, str(settings.data_dir), embedder)
    router = serve.deployment(
        Router, name="Router", **_options(profile.router.resources, profile.router.scaling, env=replica_env)
    ).bind(
        profile.router,
        RouteTargets.of(profile),
        embedder,
        multilingual_embedder=profile.embedder.multilingual,
        local_encoder=(profile.embedder, embedder_path) if profile.router.embeds_in_process(profile.embedder) else None,
    )
    telemetry = str(settings.gpu_telemetry_file) if settings.gpu_telemetry_file else None
    monitor = serve.deployment(
        GpuMonitor, name="GpuMonitor", num_replicas=1, **_options(profile.monitor.resources, env=replica_env)
    ).bind(profile.monitor, telemetry)
    # NVML reads the GPUs of the node it runs on: each node group with a GPU gets a monitor
    # of its own, placed there (one GPU per node, so one monitor reads its group's card).
    node_monitors = {
        group: serve.deployment(
            GpuMonitor, name=f"GpuMonitor_{group}", num_replicas=1,
            **_options(profile.monitor.resources.model_copy(update={"node_group": group}), env=replica_env),
        ).bind(profile.monitor, telemetry)
        for group, spec in profile.cluster.node_groups.items() if spec.gpus
    }
    extraction = serve.deployment(
        Extraction, name="Extraction", **_options(profile.extraction.resources, profile.extraction.scaling, env=replica_env)
    ).bind(profile, llms, router, residency, collections)
    batches = None
    if profile.batch.enabled:
        # One replica: it owns the job store (its SQLite file); the ingress replicas run the lines.
        batches = serve.deployment(
            Batches, name="Batches", num_replicas=1, **_options(profile.batch.resources, env=replica_env)
        ).bind(profile.batch, str(settings.data_dir))
    ingress_cls = make_ingress_class(settings, frozenset(spec.model_id for spec in profile.models),
                                     upload_bytes=profile.batch.max_file_bytes if profile.batch.enabled else None)
    return serve.deployment(
        ingress_cls, name="Ingress", **_options(profile.ingress.resources, profile.ingress.scaling, env=replica_env)
    ).bind(profile, llms, embedder, router, monitor, extraction, collections, residency,
           local_router=partial(InProcessRouter, profile, embedder_path) if profile.router.embeds_in_process(profile.embedder) else None,
           batches=batches, node_monitors=node_monitors or None)


def build_app(args: dict[str, Any]):
    """Ray Serve application builder (``import_path: serve.app:build_app``)."""
    from serve.exposure import exposure_problem, serve_http_host

    parsed = AppArgs.model_validate(args or {})
    profile = load_profile(parsed.profile)
    settings = load_settings()
    problem = exposure_problem(serve_http_host(), settings)
    if problem:
        raise RuntimeError(f"refusing to start: {problem}")
    if profile.device == "cpu":
        _check_cores(profile)
    return build_graph(profile, settings)


def _check_cores(profile: Profile) -> None:
    """Refuse engine cores this machine does not allow; log the plan (and any sharing)."""
    import logging

    from serve.kernel.core_plan import build_core_plan

    plan = build_core_plan(profile)
    if plan.problems():
        raise RuntimeError("refusing to start: the CPU engines' cores do not exist here\n" + plan.table())
    logging.getLogger("ray.serve").info("%s", plan.table())
