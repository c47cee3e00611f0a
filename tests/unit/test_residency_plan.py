"""The residency plan: what the cpu-swap and gpu profiles hold awake, and refusals that
name the model and the shortfall."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serve.kernel.config import PROJECT_ROOT, ProfileError, load_profile
from serve.kernel.residency_plan import build_residency_plan
from tests.support.profiles import llm_entry, profile_variant


_variant = profile_variant


def test_cpu_swap_holds_two_of_its_three_models_awake():
    profile = load_profile("cpu-swap")
    plan = build_residency_plan(profile)
    assert [m.role for m in profile.models] == ["extractor", "reasoner", "heavy"]
    assert [m.residency for m in profile.models] == ["resident", "on_demand", "on_demand"]
    assert plan.problems() == [] and plan.max_awake == 2
    assert "awake at once: at most 2 of 3" in plan.table()
    assert all(m.mechanism("cpu") == "stop" for m in profile.on_demand)


def test_the_14b_model_cannot_swap_in_beside_the_resident_8b_on_16_gb(tmp_path):
    heavy = {
        "role": "heavy", "model_id": "qwen3-14b-awq", "source": "Qwen/Qwen3-14B-AWQ", "model_facts": "qwen3-14b-awq",
        "max_model_len": 4096, "residency": "on_demand", "resources": {"num_cpus": 1, "num_gpus": 0.7},
        "engine_kwargs": {"quantization": "awq_marlin", "dtype": "float16"},
    }

    def add_heavy(raw):
        llm_entry(raw, "reasoner").update(residency="on_demand")
        raw["models"].append(heavy)

    with pytest.raises(ProfileError) as err:
        load_profile(_variant(tmp_path, "gpu-16gb", add_heavy))
    message = str(err.value)
    # budget 16 - 0.5 headroom - 1.6 embedder = 13.90 GiB; the extractor holds 8.00; 0.7 x 16 = 11.20 GiB
    assert "qwen3-14b-awq (heavy) needs 11.20 GiB awake" in message
    assert "leaves 5.90 GiB beside the resident models: short by 5.30 GiB" in message
    assert "Residency plan for profile 'gpu-16gb'" in message and "DOES NOT FIT" in message


def test_the_80_gb_card_swaps_the_14b_model_with_the_reasoner():
    plan = build_residency_plan(load_profile("gpu-80gb"))
    rows = {row.role: row for row in plan.rows}
    assert plan.problems() == [] and plan.max_awake == 2
    assert rows["heavy"].mechanism == "level1" and rows["heavy"].parked_host_gib == pytest.approx(9.29, abs=0.01)
    assert plan.room_for(rows["heavy"]) == pytest.approx(71.5 - 32 - 32)


def test_a_cpu_budget_needs_every_models_size_and_a_cpu_model_sleeps_by_stop(tmp_path):
    with pytest.raises(ProfileError, match=r"host_memory_gib for \['heavy'\]"):
        load_profile(_variant(tmp_path, "cpu-swap", lambda raw: llm_entry(raw, "heavy").pop("host_memory_gib")))
    with pytest.raises(ProfileError, match="vLLM ignores sleep on CPU"):
        load_profile(_variant(tmp_path, "cpu-swap", lambda raw: llm_entry(raw, "heavy").update(sleep_mode="level1")))
    with pytest.raises(ProfileError, match="it must be resident"):
        load_profile(_variant(tmp_path, "cpu-swap", lambda raw: llm_entry(raw, "extractor").update(residency="on_demand")))


def test_a_budget_too_small_for_an_on_demand_model_is_refused_with_its_shortfall(tmp_path):
    with pytest.raises(ProfileError) as err:
        load_profile(_variant(tmp_path, "cpu-swap", lambda raw: llm_entry(raw, "heavy").update(host_memory_gib=3.6)))
    assert "qwen3-tiny-heavy (heavy) needs 3.60 GiB awake" in str(err.value)
    assert "short by 0.50 GiB" in str(err.value)


def test_level1_sleepers_must_fit_in_host_memory(tmp_path):
    with pytest.raises(ProfileError, match="park 16.78 GiB of weights in host memory, more than the worker's 8 GiB"):
        load_profile(_variant(tmp_path, "gpu-80gb", lambda raw: raw["cluster"].update(worker_memory_gib=8)))


def test_the_plan_command_prints_the_residency_plan():
    out = subprocess.run([sys.executable, "-m", "serve", "plan", "cpu-swap"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Residency plan for profile 'cpu-swap'" in out.stdout and "qwen3-tiny-heavy" in out.stdout
