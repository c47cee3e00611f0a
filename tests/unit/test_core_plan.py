"""The CPU core plan: each CPU engine's cores, checked against the machine."""

from __future__ import annotations

import os

import pytest

from deployments.llm.builder import engine_env
from serve.kernel.config import load_profile
from serve.kernel.core_plan import build_core_plan, parse_cores
from tests.support.profiles import with_llm

CPU = load_profile("cpu")


def with_cores(extractor, reasoner):
    return with_llm(with_llm(CPU, "extractor", cpu_cores=extractor), "reasoner", cpu_cores=reasoner)


def test_core_lists_parse_like_taskset():
    assert parse_cores("0-2,5") == (0, 1, 2, 5)
    assert parse_cores("3,1,1") == (1, 3)
    assert parse_cores("all") == tuple(sorted(os.sched_getaffinity(0)))
    allowed = tuple(sorted(os.sched_getaffinity(0)))
    assert parse_cores("rest") == (allowed[1:] or allowed)
    with pytest.raises(ValueError, match="backwards"):
        parse_cores("3-1")


def test_the_plan_says_which_engines_share_cores_and_refuses_missing_ones():
    split = build_core_plan(with_cores("0-1", "2-3"), allowed=(0, 1, 2, 3))
    assert split.shared() == [] and split.problems() == []
    shared = build_core_plan(with_cores("0-2", "2-3"), allowed=(0, 1, 2, 3))
    assert shared.shared() == [("extractor", "reasoner", (2,))]
    assert "share cores [2]" in shared.table() and "verdict: fits" in shared.table()
    missing = build_core_plan(with_cores("0-1", "4-5"), allowed=(0, 1, 2, 3))
    assert missing.problems() == ["reasoner (qwen3-tiny-reasoner) is bound to cores [4, 5], but this machine allows [0, 1, 2, 3]"]
    assert "DOES NOT FIT" in missing.table()
    assert build_core_plan(with_cores(None, None), allowed=(0, 1)).rows[0].cores is None


def test_the_plan_names_the_control_planes_cores_and_warns_when_engines_take_them_all():
    apart = build_core_plan(with_cores("1-3", "3"), allowed=(0, 1, 2, 3))
    assert apart.control() == (0,)
    assert "control plane (Ray, replicas, HTTP proxy): cores [0]" in apart.table()
    everything = build_core_plan(with_cores("0-1", "1"), allowed=(0, 1))
    assert everything.control() == ()
    assert "every core computes for an engine" in everything.table() and "cpu_cores: rest" in everything.table()


def test_the_engine_gets_one_thread_per_core_on_cpu_only():
    spec = CPU.extractor.model_copy(update={"cpu_cores": "0,2-3"})
    assert engine_env(spec, "cpu")["VLLM_CPU_OMP_THREADS_BIND"] == "0,2,3"
    assert engine_env(spec, "cpu")["LLMGRAPH_ENGINE_CORES"] == "0,2,3", "the scheduler is pinned to the same cores"
    assert engine_env(spec, "cpu")["VLLM_CPU_KVCACHE_SPACE"] == CPU.extractor.env["VLLM_CPU_KVCACHE_SPACE"]
    assert not {"VLLM_CPU_OMP_THREADS_BIND", "LLMGRAPH_ENGINE_CORES"} & set(engine_env(spec, "gpu"))
    allowed = sorted(os.sched_getaffinity(0))
    assert engine_env(CPU.extractor, "cpu")["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, allowed[1:] or allowed))


def test_the_cpu_profiles_bind_their_engines_deliberately():
    for name in ("cpu", "cpu-tiny"):
        profile = load_profile(name)
        assert profile.extractor.cpu_cores and profile.reasoner.cpu_cores, name


def test_a_gpu_profile_refuses_cpu_cores():
    from pydantic import ValidationError

    from serve.kernel.config import Profile

    data = load_profile("gpu-16gb").model_dump()
    data["models"][0]["cpu_cores"] = "0-1"
    with pytest.raises(ValidationError, match="cpu_cores binds CPU engines"):
        Profile.model_validate(data)


def test_the_graphs_replicas_keep_to_the_cores_no_engine_computes_on():
    from serve.kernel.core_plan import CONTROL_CORES_ENV, MOVE_RAY_DAEMONS_ENV, control_plane_env

    allowed = sorted(os.sched_getaffinity(0))
    env = control_plane_env(CPU)
    if len(allowed) > 1:
        assert env == {CONTROL_CORES_ENV: str(allowed[0]), MOVE_RAY_DAEMONS_ENV: "1"}, \
            "rest leaves the first core to the control plane, and a cpu profile moves Ray's daemons there"
        kept = CPU.model_copy(update={"move_ray_daemons": False})
        assert control_plane_env(kept) == {CONTROL_CORES_ENV: str(allowed[0])}, "the profile can leave Ray's daemons be"
    else:
        assert env == {}, "one core: nothing to keep apart"
    assert control_plane_env(with_cores("all", "all")) == {}, "no core is free of engines"
    assert control_plane_env(with_cores(None, "rest")) == {}, "an engine left to vLLM's auto may be anywhere"
    assert control_plane_env(load_profile("gpu-16gb")) == {}
    assert CPU.moves_ray_daemons and not load_profile("gpu-16gb").moves_ray_daemons, "on for cpu profiles, off for gpu"
