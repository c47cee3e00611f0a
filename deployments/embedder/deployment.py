"""The Embedder deployment: batched embeddings for the API, the router and collections.

Concurrent embedding requests share forward passes (``@serve.batch``, measured in
texts). It holds no state but the model, so it can run as many replicas as the profile
gives it; the collections' files belong to the Collections deployment, which asks it
for vectors.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import numpy as np
from ray import serve

from deployments.embedder.encoder import Encoder, encode_requests
from serve.config import EmbedderSpec
from serve.log_filters import quiet_probes


def _texts_in(requests: list[list[str]]) -> int:
    """A batch's size for ``@serve.batch``: its texts (an empty request counts one)."""
    return sum(max(len(texts), 1) for texts in requests)


class Embedder:
    """Serves embeddings.

    Args:
        spec: The profile's embedder block.
        model_path: Resolved model location.
        cache_dir: Where derived model files (the ONNX export) are cached.
        encoder: Injectable encoder (tests); by default the profile's backend.
    """

    def __init__(self, spec: EmbedderSpec, model_path: str, *, cache_dir: Optional[str] = None,
                 encoder: Optional[Encoder] = None) -> None:
        quiet_probes()  # successful health probes stay out of the access log
        if encoder is None:
            from deployments.embedder.encoder import make_encoder
            from serve.settings import load_settings

            encoder = make_encoder(spec, model_path, cache_dir=Path(cache_dir) if cache_dir else load_settings().cache_dir)
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

    # A batch is measured in texts, not calls: one call of 2,000 passages would otherwise
    # be one forward pass that every other caller waits behind.
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01, batch_size_fn=_texts_in)
    async def _encode_batched(self, requests: list[list[str]]) -> list[tuple[np.ndarray, int]]:
        # In a thread: torch releases the GIL, so the replica keeps answering meanwhile.
        return await asyncio.to_thread(encode_requests, self._encoder, requests)

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Embed ``texts``; returns ``{"vectors": float32 array, "tokens": int}``.

        Long lists go through in slices of at most ``max_batch_size`` texts, each its own
        batched call, so other callers' texts join the passes in between.
        """
        size = self._spec.max_batch_size
        texts = list(texts)
        parts = [await self._encode_batched(texts[i:i + size]) for i in range(0, len(texts), size)]
        if not parts:
            parts = [await self._encode_batched([])]
        return {"vectors": np.concatenate([vectors for vectors, _ in parts]), "tokens": sum(t for _, t in parts)}

    async def check_health(self) -> None:
        """Serve health check: the encoder is in memory once constructed."""
        return None
