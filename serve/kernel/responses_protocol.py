"""The OpenAI Responses API request, as the graph takes it.

Fields the graph honours are modelled; any other field is refused with a 400 that names
it (``extra="forbid"``), so a client never gets an answer that silently ignored what
it asked. Input items are checked one by one where they are turned into chat messages
(``serve/services/responses_convert.py``), so an unknown item type is named with its
index. Bounds follow chat's (``serve/kernel/limits.py``).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from serve.kernel.limits import MAX_TOOLS

#: Items one request may carry as input (a conversation's worth).
MAX_INPUT_ITEMS = 2048
#: Responses one conversation may chain through ``previous_response_id``: older context
#: must be summarised by the client (a chain is read from the store at every turn).
MAX_CHAIN = 256
#: Largest conversation (serialized items) a stored response may carry forward.
MAX_CONVERSATION_BYTES = 4 * 1024 * 1024

ResponseId = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class TextFormat(BaseModel):
    """``text.format``: plain text, any JSON object, or JSON matching a schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = Field(None, max_length=64)
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")
    description: Optional[str] = None
    strict: Optional[bool] = None


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Optional[TextFormat] = None
    verbosity: Optional[Literal["low", "medium", "high"]] = None


class ReasoningOptions(BaseModel):
    """``reasoning``: ``effort`` sets the thinking budget; the thinking comes back as a
    reasoning item (its raw text; the graph writes no summaries)."""

    model_config = ConfigDict(extra="forbid")

    effort: Optional[Literal["none", "minimal", "low", "medium", "high", "xhigh"]] = None
    summary: Optional[Literal["auto", "concise", "detailed"]] = None
    generate_summary: Optional[Literal["auto", "concise", "detailed"]] = None


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, description='A model id, a role, or "auto".')
    input: Union[str, list[Any]] = Field(description="A text, or input items (messages, function calls "
                                                    "and their outputs).")
    instructions: Optional[str] = None
    previous_response_id: Optional[str] = ResponseId
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    text: Optional[TextOptions] = None
    tools: Optional[list[dict[str, Any]]] = Field(None, max_length=MAX_TOOLS)
    tool_choice: Optional[Union[Literal["none", "auto", "required"], dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    reasoning: Optional[ReasoningOptions] = None
    store: bool = True
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    metadata: Optional[dict[str, Any]] = None
    user: Optional[str] = Field(None, max_length=256)
    safety_identifier: Optional[str] = Field(None, max_length=256)
    prompt_cache_key: Optional[str] = Field(None, max_length=256)
    truncation: Optional[Literal["disabled", "auto"]] = None
    service_tier: Optional[Literal["auto", "default"]] = None
    include: Optional[list[Literal["reasoning.encrypted_content"]]] = Field(
        None, max_length=8,
        description="Accepted for clients that always send it: the graph's reasoning items carry their text "
        "(nothing is encrypted), and reasoning items sent back as input are read past.")
    background: Optional[Literal[False]] = Field(None, description="Background responses are not offered.")
