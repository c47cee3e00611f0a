"""``/v1/embeddings``: OpenAI embeddings from the graph's sentence-transformers embedder.

Inputs are checked against the embedder's limits (count, length, dimensions), each
failure a 4xx naming the input; vectors come back as floats or base64 little-endian
float32, as OpenAI's API sends them.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from serve.kernel.config import AUTO_MODEL_ID, Profile
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import BadRequest, NotFound, within
from serve.kernel.protocol import EmbeddingItem, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage


class EmbeddingsService:
    """Embed texts with the profile's embedding model.

    Args:
        profile: The profile (``embedder`` holds the model and its limits).
        dispatcher: Admission, and the LLM ids (an LLM named here is a 400, not a 404).
        embedder: The Embedder deployment's handle.
        timeout_s: Longest wait for the embedder.
    """

    def __init__(self, profile: Profile, dispatcher: Dispatcher, embedder: Any, *, timeout_s: float) -> None:
        self._spec = profile.embedder
        self._dispatcher = dispatcher
        self._embedder = embedder
        self._timeout_s = timeout_s

    async def embed(self, body: EmbeddingsRequest) -> EmbeddingsResponse:
        """The vectors of ``body.input``, in order, with the tokens read."""
        self._dispatcher.admit(llm=False)
        texts = self._texts(body)
        result = await within(self._embedder.embed.remote(texts), self._timeout_s, "the embedder")
        data = []
        for i, vector in enumerate(result["vectors"]):
            if body.encoding_format == "base64":
                value: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            else:
                value = np.asarray(vector).tolist()
            data.append(EmbeddingItem(index=i, embedding=value))
        tokens = int(result["tokens"])
        return EmbeddingsResponse(data=data, model=self._spec.model_id,
                                  usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens))

    def _texts(self, body: EmbeddingsRequest) -> list[str]:
        """The request's texts, checked against the model and its limits."""
        spec = self._spec
        if body.model not in (spec.model_id, AUTO_MODEL_ID):
            if body.model in self._dispatcher.specs:
                raise BadRequest(f"model {body.model!r} is not an embedding model", param="model", code="model_not_supported")
            raise NotFound(f"model {body.model!r} does not exist", param="model", code="model_not_found")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise BadRequest("input must not be empty", param="input")
        if not all(isinstance(t, str) for t in texts):
            raise BadRequest("token arrays are not supported; send text", param="input")
        if len(texts) > spec.max_inputs_per_request:
            raise BadRequest(f"at most {spec.max_inputs_per_request} inputs per request", param="input", code="too_many_inputs")
        for i, text in enumerate(texts):
            if not text:
                raise BadRequest(f"input[{i}] is empty", param="input")
            if len(text) > spec.max_input_chars:
                raise BadRequest(f"input[{i}] is longer than {spec.max_input_chars} characters", param="input", code="input_too_long")
        if body.dimensions is not None and body.dimensions != spec.dimensions:
            raise BadRequest(f"this model only produces {spec.dimensions} dimensions", param="dimensions")
        return texts
