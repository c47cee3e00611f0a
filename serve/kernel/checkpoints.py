"""Offline tiny Qwen3-architecture checkpoints for the ``cpu-tiny`` profile.

The ``cpu-tiny`` profile must run with no network and no downloaded weights, yet through
the very same code path as the real models (vLLM, the Qwen chat template, the tool-call
and reasoning parsers). So we build, deterministically and in seconds, a real
``Qwen3ForCausalLM`` checkpoint with random weights and a byte-level BPE tokenizer trained
on a small local text, carrying the Qwen chat special tokens.

Their output text is meaningless; schema-constrained decoding still yields valid JSON.
Every place that exposes them (``/v1/models``) says they are test checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Bump when the recipe changes so cached checkpoints are rebuilt.
RECIPE_VERSION = 1

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
]

# A ChatML template in the shape of Qwen3's: system prompt with a <tools> block, tool
# calls rendered as <tool_call> JSON, tool results wrapped in <tool_response>.
_CHAT_TEMPLATE = r"""
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}
{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}DEFAULT_SYSTEM_BLOCK
{%- for message in messages %}
{%- if message.content is string %}{%- set content = message.content %}
{%- elif message.content %}{%- set content = message.content | map(attribute='text') | join('') %}
{%- else %}{%- set content = '' %}{%- endif %}
{%- if message.role == 'system' %}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\n<tool_response>\n' + content + '\n</tool_response><|im_end|>\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\n' + content }}
{%- for call in message.tool_calls or [] %}
{%- set args = call.function.arguments if call.function.arguments is string else (call.function.arguments | tojson) %}
{{- '\n<tool_call>\n{"name": "' + call.function.name + '", "arguments": ' + args + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' + GENERATION_PREFIX }}
{%- endif %}
"""


@dataclass(frozen=True)
class TinySpec:
    """What makes one tiny checkpoint different from another."""

    name: str
    seed: int
    thinking: bool  # the template opens <think> itself, as Qwen3-4B-Thinking-2507's does
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 64  # vLLM's CPU attention rejects 16; 64 works
    vocab_size: int = 2048
    max_position_embeddings: int = 4096


TINY_SPECS: dict[str, TinySpec] = {
    "extractor": TinySpec(name="extractor", seed=1234, thinking=False),
    "reasoner": TinySpec(name="reasoner", seed=5678, thinking=True),
}

_CORPUS_FILE = Path(__file__).resolve().parents[2] / "configs" / "tiny_corpus.txt"


def chat_template(thinking: bool, default_system: str | None = None) -> str:
    """A ChatML template that renders tools in Hermes/Qwen style.

    Args:
        thinking: open ``<think>`` after the assistant header, as Qwen3-4B-Thinking-2507's
            template does.
        default_system: a system prompt used when the conversation has none and no tools
            (SmolLM2 was tuned with one; without it, it answers worse).
    """
    prefix = "'<think>\\n'" if thinking else "''"
    block = ""
    if default_system:
        block = (
            "\n{%- if not tools and messages[0].role != 'system' %}\n"
            "{{- '<|im_start|>system\\n' + " + json.dumps(default_system) + " + '<|im_end|>\\n' }}\n"
            "{%- endif %}"
        )
    template = _CHAT_TEMPLATE.replace("GENERATION_PREFIX", prefix).replace("DEFAULT_SYSTEM_BLOCK", block)
    return template.strip() + "\n"


def spec_fingerprint(spec: TinySpec) -> str:
    """A short hash of everything that determines the checkpoint's bytes."""
    payload = json.dumps(
        {
            "recipe": RECIPE_VERSION,
            "spec": spec.__dict__,
            "corpus": hashlib.sha256(_CORPUS_FILE.read_bytes()).hexdigest(),
            "template": chat_template(spec.thinking),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def checkpoint_dir(cache_dir: Path, name: str) -> Path:
    """Where the tiny checkpoint ``name`` lives (whether built yet or not)."""
    spec = TINY_SPECS[name]
    return Path(cache_dir) / "checkpoints" / f"tiny-{name}-{spec_fingerprint(spec)}"


def ensure_checkpoint(cache_dir: Path, name: str) -> Path:
    """Return the tiny checkpoint ``name``, building it first when missing.

    The build goes to a temporary directory that is renamed into place, so a reader (or
    a concurrent builder) never sees half a checkpoint.
    """
    if name not in TINY_SPECS:
        raise KeyError(f"unknown tiny checkpoint {name!r}; known: {sorted(TINY_SPECS)}")
    target = checkpoint_dir(cache_dir, name)
    if (target / "COMPLETE").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _build(TINY_SPECS[name], staging)
        (staging / "COMPLETE").write_text(spec_fingerprint(TINY_SPECS[name]) + "\n")
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished first; theirs is identical.
            if not (target / "COMPLETE").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _train_tokenizer(spec: TinySpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(SPECIAL_TOKENS),
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = _CORPUS_FILE.read_text(encoding="utf-8")
    tokenizer.train_from_iterator(text.splitlines(), trainer=trainer)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = chat_template(spec.thinking)
    return fast


def _build(spec: TinySpec, out: Path) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = _train_tokenizer(spec)
    tokenizer.save_pretrained(out)

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        eos_token_id=[config.eos_token_id], pad_token_id=config.pad_token_id
    ).save_pretrained(out)
    (out / "TEST_CHECKPOINT.md").write_text(
        f"Test checkpoint '{spec.name}' built by local-llm-graph: random weights, "
        "meaningless text. Never use for anything but tests and offline demos.\n"
    )
