"""Every private Ray API the project uses, in one place.

Ray Serve LLM's public surface (``ray.serve.llm``) does not yet export these; they are
pinned with Ray itself (``ray==2.60.0``), and an upgrade is checked here first. Nothing
else in the project imports from ``ray.llm._internal`` or ``ray.serve._private``.
"""

from __future__ import annotations

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

def serve_http_options():
    """The HTTP options (host, port) the running Serve controller was started with."""
    return _get_global_client().http_config


__all__ = [
    "Batcher", "CallbackBase", "ErrorResponse", "ModelCard", "ModelList", "NON_STREAMING_RESPONSE_TYPES", "OpenAIHTTPException",
    "RawRequestInfo", "VLLMEngine", "VLLM_ENGINE_START_STEPS", "openai_sse", "sanitize_chat_request", "serve_http_options",
]
