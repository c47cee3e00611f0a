"""The GPU memory planner's arithmetic, against values computed by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.support.profiles import llm_entry

from serve.kernel.config import CONFIGS_DIR, PROJECT_ROOT, ProfileError, load_profile
from serve.kernel.planner import GIB, build_plan, load_facts


def test_qwen3_8b_awq_kv_bytes_per_token():
    # K and V x 36 layers x 8 KV heads x head_dim 128 x 2 bytes (fp16)
    assert load_facts("qwen3-8b-awq").kv_bytes_per_token == 2 * 36 * 8 * 128 * 2 == 147_456


def test_qwen3_8b_awq_weight_bytes():
    facts = load_facts("qwen3-8b-awq")
    # Linear layers per decoder layer: q 4096x4096, k/v 4096x1024, o 4096x4096,
    # gate/up/down 3 x 4096x12288 = 192,937,984; x 36 layers.
    assert facts.linear_params == 6_945_767_424
    # Published parameter count of Qwen3-8B.
    assert facts.num_parameters == 8_190_735_360
    packed = 6_945_767_424 // 2  # 4-bit weights
    scales = 6_945_767_424 // 128 * 2  # one fp16 scale per group of 128
    zeros = 6_945_767_424 // 128 // 2  # one 4-bit zero point per group
    embeddings = 2 * 151_936 * 4096 * 2  # embed_tokens + lm_head (untied), fp16
    norms = (36 * (2 * 4096 + 2 * 128) + 4096) * 2
    assert facts.weight_bytes == packed + scales + zeros + embeddings + norms == 6_098_479_104


def test_unquantized_weights_are_params_times_dtype():
    facts = load_facts("qwen3-4b-thinking-2507")
    assert facts.num_parameters == 4_022_468_096  # published Qwen3-4B count
    assert facts.weight_bytes == 4_022_468_096 * 2


def test_fp8_kv_cache_halves_kv_bytes(tmp_path):
    raw = yaml.safe_load((CONFIGS_DIR / "gpu-16gb.yaml").read_text())
    llm_entry(raw, "extractor")["engine_kwargs"]["kv_cache_dtype"] = "fp8"
    path = tmp_path / "fp8.yaml"
    path.write_text(yaml.safe_dump(raw))
    row = build_plan(load_profile(str(path))).rows[0]
    assert row.kv_bytes_per_token == 147_456 // 2


def test_reference_profile_fits_and_shares_match_fractions():
    plan = build_plan(load_profile("gpu-16gb"))
    assert plan.problems() == []
    by_node = {r.node: r for r in plan.rows}
    assert by_node["extractor"].share_bytes == 8 * GIB
    assert by_node["extractor"].kv_bytes == 8192 * 147_456
    assert by_node["extractor"].kv_tokens_available >= 8192, "at least one full-length sequence"
    assert "verdict: fits" in plan.table()


def _overcommitted(tmp_path):
    raw = yaml.safe_load((CONFIGS_DIR / "gpu-16gb.yaml").read_text())
    llm_entry(raw, "extractor")["max_model_len"] = 16384
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_overcommitted_profile_is_refused_naming_model_and_shortfall(tmp_path):
    with pytest.raises(ProfileError) as err:
        load_profile(str(_overcommitted(tmp_path)))
    message = str(err.value)
    # need = 5.68 weights + 16384 x 147456 B (2.25 GiB) KV + 1.00 overhead = 8.93 GiB
    assert "qwen3-8b-awq (extractor) needs 8.93 GiB" in message
    assert "short by 0.93 GiB" in message
    assert "DOES NOT FIT" in message


def test_headroom_is_enforced(tmp_path):
    raw = yaml.safe_load((CONFIGS_DIR / "gpu-16gb.yaml").read_text())
    raw["gpu_headroom_gib"] = 2.0
    path = tmp_path / "headroom.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError, match="less than the 2.00 GiB headroom"):
        load_profile(str(path))


def test_plan_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "serve", "plan", "configs/gpu-16gb.yaml"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "verdict: fits" in ok.stdout
    for node in ("extractor", "reasoner", "embedder"):
        assert node in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "serve", "plan", str(_overcommitted(tmp_path))], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "short by 0.93 GiB" in bad.stderr
