"""The chat parameters clients send that vLLM's request model does not check for us.

vLLM's ``ChatCompletionRequest`` keeps any field it does not know (``extra="allow"``)
and then ignores it with a log line: a client that sends ``metadata`` or a misspelt
``max_complete_tokens`` would get an answer that silently did not do what it asked.
Here each such field is either honoured or refused with a 400 that names it:

- ``metadata`` (OpenAI's bounds: 16 pairs, keys of 64 and values of 512 characters) is
  taken off the request and echoed on the reply;
- ``retrieval`` is the graph's own extension (``serve/services/retrieval.py``);
- any other unknown field is refused.

It also refuses message content that is not text (images, audio, files): every model of
the graph is text-only, and a content part with a URL must never make the server fetch.
``reasoning_effort`` is mapped to the engine's thinking budget (:func:`thinking_budget`).
"""

from __future__ import annotations

from typing import Any, Optional

from serve.kernel.errors import BadRequest

#: Fields outside vLLM's request model that the graph takes itself.
GRAPH_FIELDS = frozenset({"retrieval", "metadata"})
#: OpenAI's bounds on request metadata.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
#: OpenAI's bound on a logit bias value.
MAX_LOGIT_BIAS_VALUE = 100
#: The content part types a text-only model reads.
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
#: Share of a model's thinking budget each ``reasoning_effort`` grants (none: no thinking).
EFFORT_SHARE = {"none": 0.0, "minimal": 0.125, "low": 0.25, "medium": 0.5, "high": 1.0, "xhigh": 1.0, "max": 1.0}


def check_metadata(metadata: Any, param: str = "metadata") -> Optional[dict[str, str]]:
    """``metadata`` within OpenAI's bounds (string keys and values), or a 400."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise BadRequest(f"{param} must be an object of strings", param=param, code="invalid_metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise BadRequest(f"{param} holds {len(metadata)} pairs; at most {MAX_METADATA_PAIRS}", param=param,
                         code="invalid_metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > MAX_METADATA_KEY_CHARS:
            raise BadRequest(f"{param} keys are strings of at most {MAX_METADATA_KEY_CHARS} characters",
                             param=param, code="invalid_metadata")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE_CHARS:
            raise BadRequest(f"{param}[{key[:40]!r}] must be a string of at most {MAX_METADATA_VALUE_CHARS} characters",
                             param=param, code="invalid_metadata")
    return dict(metadata)


def check_text_only(messages: Any, param: str = "messages") -> None:
    """Refuse content parts that are not text: the graph's models read text only."""
    for index, message in enumerate(messages or []):
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        if not isinstance(content, list):
            continue
        for part_index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
            if not isinstance(kind, str) or kind not in TEXT_PARTS:
                where = f"{param}[{index}].content[{part_index}].type"
                raise BadRequest(f"{where} {str(kind)[:40]!r} is not offered: the graph's models read text only",
                                 param=where, code="unsupported_content")


def take_chat_extras(body: Any) -> tuple[Any, Optional[dict[str, str]]]:
    """Check a chat request's fields beyond vLLM's model; a copy without ``metadata`` (the
    engine never sees it) and the metadata to echo. Raises a 400 naming an unknown field."""
    extra = dict(body.model_extra or {})
    for name in extra:
        if name not in GRAPH_FIELDS:
            raise BadRequest(f"parameter {str(name)[:64]!r} is not supported", param=str(name)[:64],
                             code="unsupported_parameter")
    metadata = check_metadata(extra.get("metadata"))
    for token, bias in (getattr(body, "logit_bias", None) or {}).items():
        if not isinstance(bias, (int, float)) or abs(bias) > MAX_LOGIT_BIAS_VALUE:
            raise BadRequest(f"logit_bias[{str(token)[:20]}] must lie in [-100, 100]", param="logit_bias",
                             code="invalid_logit_bias")
    check_text_only(body.messages)
    if "metadata" in extra:
        body = body.model_copy()
        body.__pydantic_extra__ = {k: v for k, v in extra.items() if k != "metadata"}
    return body, metadata


def thinking_budget(effort: Optional[str], budget: Optional[int]) -> Optional[int]:
    """The thinking budget a ``reasoning_effort`` grants out of a model's ``budget``
    (None: the request did not ask, or the model does not think)."""
    if effort is None or not budget:
        return None
    return int(budget * EFFORT_SHARE.get(effort, 1.0))
