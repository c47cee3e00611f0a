"""Every private Ray API the project uses, in one place.

Ray Serve LLM's public surface (``ray.serve.llm``) does not yet export these; they are
pinned with Ray itself (``ray==2.60.0``), and an upgrade is checked here first. Nothing
else in the project imports from ``ray.llm._internal`` or ``ray.serve._private``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ErrorResponse,  # what LLMServer yields; the public class is a subclass of it
    ModelCard,
    ModelList,
    OpenAIHTTPException,
)
from ray.llm._internal.serve.core.ingress.utils import (
    NON_STREAMING_RESPONSE_TYPES,
    _openai_json_wrapper as openai_sse,
    _sanitize_chat_completion_request as sanitize_chat_request,
)
from ray.llm._internal.serve.core.protocol import RawRequestInfo
from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine
from ray.llm._internal.serve.utils.batcher import Batcher
from ray.serve.context import _get_global_client

#: The VLLMEngine methods :class:`deployments.llm.engine.OffLoopStartEngine` takes over, in
#: the order ``VLLMEngine.start`` calls them (checked by tests/unit/test_ray_private.py):
#: the awaited callback hook comes first, then the two blocking steps.
VLLM_ENGINE_START_STEPS = ("on_after_node_init", "_prepare_engine_config", "_start_async_llm_engine")

#: The LLMServer step that batches a stream's chunks; the graph's servers replace it so the
#: first token goes out at once (``deployments/llm/streaming.py``). LLMServer's
#: ``_run_request`` calls it with the engine's stream (checked by tests/unit/test_ray_private.py).
LLM_SERVER_STREAM_BATCHING = "_batch_output_stream"


def engine_client(engine: Any) -> Any:
    """vLLM's ``AsyncLLM`` inside a Ray Serve LLM ``VLLMEngine`` (None before its start).

    The graph needs it for what ``VLLMEngine`` does not offer: shutting the EngineCore
    down (``VLLMEngine.shutdown`` closes only its token channel) and one warm-up token.
    """
    return engine._engine_client


def stream_batching_interval_ms(server: Any) -> Optional[float]:
    """The batching interval of an LLMServer's streams (``stream_batching_interval_ms``
    in the model's ``experimental_configs``, else Ray Serve LLM's default)."""
    return server._get_batch_interval_ms()


def replace_stream_batching(server_cls: type, batch: Callable[[Any, Any], Any]) -> None:
    """Make ``server_cls`` batch its streams with ``batch(server, generator)``."""
    setattr(server_cls, LLM_SERVER_STREAM_BATCHING, batch)


def serve_http_options():
    """The HTTP options (host, port) the running Serve controller was started with."""
    return _get_global_client().http_config


__all__ = [
    "Batcher", "CallbackBase", "ErrorResponse", "ModelCard", "ModelList", "NON_STREAMING_RESPONSE_TYPES", "OpenAIHTTPException",
    "RawRequestInfo", "VLLMEngine", "VLLM_ENGINE_START_STEPS", "LLM_SERVER_STREAM_BATCHING", "engine_client", "openai_sse",
    "replace_stream_batching", "sanitize_chat_request", "serve_http_options", "stream_batching_interval_ms",
]
