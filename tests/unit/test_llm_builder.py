"""The profile -> LLMConfig translation: placement, memory share, parsers."""

from __future__ import annotations

import pytest

from deployments.llm.builder import llm_config_dict
from serve.kernel.config import load_profile


@pytest.fixture(scope="module", autouse=True)
def _no_stray_ray():
    """LLMConfig may start a local Ray on first use; never leave it running."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_cpu_config_places_fractional_cpu_bundle_and_no_gpu():
    spec = load_profile("cpu-tiny").extractor
    config = llm_config_dict(spec, device="cpu", model_path="/tmp/model")
    bundle = config["placement_group_config"]["bundles"][0]
    assert set(bundle) == {"CPU"}
    replica = config["deployment_config"]["ray_actor_options"]["num_cpus"]
    assert bundle["CPU"] + replica == pytest.approx(spec.resources.num_cpus)
    assert config["accelerator_config"] == {"kind": "cpu"}
    assert "gpu_memory_utilization" not in config["engine_kwargs"]
    assert config["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_gpu_memory_share_equals_ray_fraction():
    profile = load_profile("gpu-16gb")
    for spec in (profile.extractor, profile.reasoner):
        config = llm_config_dict(spec, device="gpu", model_path=spec.source)
        assert config["engine_kwargs"]["gpu_memory_utilization"] == spec.resources.num_gpus
        assert config["placement_group_config"]["bundles"][0]["GPU"] == spec.resources.num_gpus


def test_parsers_and_limits_reach_the_engine():
    profile = load_profile("cpu-tiny")
    reasoner = llm_config_dict(profile.reasoner, device="cpu", model_path="/m")["engine_kwargs"]
    assert reasoner["reasoning_parser"] == "qwen3"
    assert reasoner["enable_auto_tool_choice"] is True and reasoner["tool_call_parser"] == "hermes"
    assert reasoner["max_model_len"] == profile.reasoner.max_model_len
    extractor = llm_config_dict(profile.extractor, device="cpu", model_path="/m")["engine_kwargs"]
    assert "reasoning_parser" not in extractor
    assert extractor["structured_outputs_config"]["disable_any_whitespace"] is True


def test_config_is_accepted_by_ray_serve_llm():
    from ray.serve.llm import LLMConfig

    spec = load_profile("cpu-tiny").reasoner
    config = LLMConfig(**llm_config_dict(spec, device="cpu", model_path="/m"))
    assert config.model_id == spec.model_id
    engine = config.get_engine_config()
    assert engine.frontend_kwargs["tool_call_parser"] == "hermes"
    assert engine.engine_kwargs["reasoning_parser"] == "qwen3"


def test_local_weights_skip_the_download_step(tmp_path):
    spec = load_profile("cpu-tiny").extractor
    local = llm_config_dict(spec, device="cpu", model_path=str(tmp_path))
    assert local["callback_config"]["callback_class"].endswith("EngineStartCallback")
    assert local["callback_config"]["callback_kwargs"] == {"local_weights": True}
    hub = llm_config_dict(load_profile("gpu-16gb").extractor, device="gpu", model_path="Qwen/Qwen3-8B-AWQ")
    assert hub["callback_config"]["callback_kwargs"] == {"local_weights": False}, "hub weights are downloaded"


def test_local_weights_callback_turns_node_init_off():
    import asyncio

    from ray.serve.llm import LLMConfig

    spec = load_profile("cpu-tiny").extractor
    config = LLMConfig(**llm_config_dict(spec, device="cpu", model_path="/"))
    callback = config.get_or_create_callback()
    asyncio.run(callback.run_callback("on_before_node_init"))
    assert callback.ctx.run_init_node is False


def test_llm_replicas_wait_for_health_checks_as_long_as_a_wake_may_take():
    profile = load_profile("cpu-swap")
    heavy = llm_config_dict(profile.llm("heavy"), device="cpu", model_path="/m",
                            wake_timeout_s=profile.residency.wake_timeout_s)["deployment_config"]
    assert heavy["health_check_timeout_s"] == profile.residency.wake_timeout_s
    own = profile.llm("heavy").model_copy(update={"scaling": profile.llm("heavy").scaling.model_copy(
        update={"health_check_timeout_s": 7.0})})
    assert llm_config_dict(own, device="cpu", model_path="/m")["deployment_config"]["health_check_timeout_s"] == 7.0


def test_every_engine_schedules_by_priority_so_batch_lines_wait_for_people():
    for profile in ("cpu", "cpu-swap", "gpu-16gb"):
        for spec in load_profile(profile).models:
            device = load_profile(profile).device
            assert llm_config_dict(spec, device=device, model_path="/m")["engine_kwargs"]["scheduling_policy"] == "priority"
