"""The Embedder deployment: batches texts from concurrent requests into one forward pass."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np  # noqa: F401 - batch results are arrays
from ray import serve

from deployments.embedder.encoder import Encoder, encode_requests
from serve.config import EmbedderSpec


class Embedder:
    """Serves embeddings for the ingress (and, later, the document store).

    Args:
        spec: The profile's embedder block.
        model_path: Resolved model location.
        encoder: Injectable encoder (tests); a SentenceTransformerEncoder by default.
    """

    def __init__(
        self, spec: EmbedderSpec, model_path: str, *, encoder: Optional[Encoder] = None
    ) -> None:
        if encoder is None:
            from deployments.embedder.encoder import SentenceTransformerEncoder

            encoder = SentenceTransformerEncoder(
                model_path, normalize=spec.normalize, device=spec.device
            )
        if encoder.dimensions != spec.dimensions:
            raise ValueError(
                f"embedder {spec.model_id}: model produces {encoder.dimensions}-d "
                f"vectors but the profile says dimensions={spec.dimensions}"
            )
        self._spec = spec
        self._encoder = encoder
        # The batch size and wait come from the profile, not from a decorator.
        self._encode_batched.set_max_batch_size(spec.max_batch_size)
        self._encode_batched.set_batch_wait_timeout_s(spec.batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01)
    async def _encode_batched(self, requests: list[list[str]]) -> list[np.ndarray]:
        return encode_requests(self._encoder, requests)

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Embed ``texts``; returns ``{"vectors": float32 array, "tokens": int}``."""
        vectors = await self._encode_batched(list(texts))
        return {"vectors": vectors, "tokens": self._encoder.count_tokens(texts)}

    async def check_health(self) -> None:
        """Serve health check: the encoder is in memory once constructed."""
        return None
