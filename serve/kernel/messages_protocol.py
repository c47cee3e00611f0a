"""The Anthropic Messages API request, as the graph takes it.

Fields the graph honours are modelled and anything else is refused with a 400 naming it
(``extra="forbid"``). Content blocks are checked where they become chat messages
(``serve/services/messages_convert.py``): text, tool use and tool results are read,
earlier thinking is read past, images and documents are refused (the graph's models
read text, and a block's URL must never make the server fetch).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from serve.kernel.limits import MAX_STOP_CHARS, MAX_STOP_SEQUENCES, MAX_TOOLS

#: Most messages one request may carry, and content blocks per message.
MAX_MESSAGES = 2048
MAX_BLOCKS = 512


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: Union[str, list[dict[str, Any]]] = Field(description="A text, or content blocks.")


class AnthropicTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    description: Optional[str] = None
    input_schema: dict[str, Any]
    type: Optional[Literal["custom"]] = None
    cache_control: Optional[dict[str, Any]] = None


class AnthropicToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["auto", "any", "tool", "none"]
    name: Optional[str] = None
    disable_parallel_tool_use: Optional[bool] = None


class ThinkingOptions(BaseModel):
    """``thinking``: ``enabled`` with a token budget (the reasoner's thinking budget), or
    ``disabled``; the thinking comes back as ``thinking`` blocks."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Optional[int] = Field(None, ge=1)


class MessagesRequest(BaseModel):
    """``POST /v1/messages``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int = Field(ge=1)
    system: Optional[Union[str, list[dict[str, Any]]]] = None
    stop_sequences: Optional[list[str]] = Field(None, max_length=MAX_STOP_SEQUENCES)
    temperature: Optional[float] = Field(None, ge=0, le=1)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=1)
    stream: bool = False
    tools: Optional[list[AnthropicTool]] = Field(None, max_length=MAX_TOOLS)
    tool_choice: Optional[AnthropicToolChoice] = None
    thinking: Optional[ThinkingOptions] = None
    metadata: Optional[dict[str, Optional[str]]] = Field(None, description="user_id only, as Anthropic's.")
    service_tier: Optional[Literal["auto", "standard_only"]] = None

    def stop_bounds(self) -> Optional[str]:
        """The problem with ``stop_sequences``, if any (each one is searched for at every step)."""
        for stop in self.stop_sequences or []:
            if len(stop) > MAX_STOP_CHARS:
                return f"stop_sequences holds a sequence of {len(stop)} characters; at most {MAX_STOP_CHARS}"
        return None


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: Optional[Union[str, list[dict[str, Any]]]] = None
    tools: Optional[list[AnthropicTool]] = Field(None, max_length=MAX_TOOLS)
    tool_choice: Optional[AnthropicToolChoice] = None
    thinking: Optional[ThinkingOptions] = None
