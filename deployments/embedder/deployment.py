"""The Embedder deployment: batched embeddings for the API, the router and collections.

Concurrent embedding requests share forward passes (``@serve.batch``) up to a token
budget: a pass costs what its tokens cost, so twenty routing prompts fit where one long
passage does, and a 2,000-passage upsert goes through in passes of the budget with
other callers' texts joining in between. It holds no state but the model, so it can run
as many replicas as the profile gives it; the collections' files belong to the
Collections deployment, which asks it for vectors.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
from ray import serve

from deployments.embedder.encoder import Encoder, encode_requests
from serve.kernel.config import EmbedderSpec
from serve.kernel.cpu_affinity import spread_over_node_cores
from serve.kernel.log_filters import quiet_probes

#: Characters per token assumed before tokenizing. WordPiece and BPE average about four
#: on English and fewer on other scripts; three errs toward smaller passes.
CHARS_PER_TOKEN = 3
#: Special tokens every text carries ([CLS]/[SEP] or BOS/EOS).
SPECIAL_TOKENS = 2


class Slice(NamedTuple):
    """Texts that go through ``@serve.batch`` together, with their estimated tokens."""

    texts: list[str]
    tokens: int


def _tokens_in(slices: list[Slice]) -> int:
    """A batch's size for ``@serve.batch``: its estimated tokens."""
    return sum(piece.tokens for piece in slices)


class TokenBudget:
    """Cuts a request's texts into slices that each fit one forward pass.

    A text costs its estimated tokens, but never less than ``max_tokens / max_texts``:
    with one measure for ``@serve.batch``, that floor is what keeps a pass of many short
    texts from several callers within ``max_texts`` as well.

    Args:
        max_tokens: The pass's token budget (``embedder.max_batch_tokens``).
        max_texts: Most texts in one pass (``embedder.max_batch_size``).
        max_tokens_per_text: The model's sequence limit: a longer text is truncated, so
            it costs no more than this.
    """

    def __init__(self, max_tokens: int, max_texts: int, max_tokens_per_text: Optional[int]) -> None:
        self.max_tokens, self.max_texts = max_tokens, max_texts
        self._floor = -(-max_tokens // max_texts)
        # Never above the budget: @serve.batch refuses an item larger than a whole batch.
        self._ceiling = max(min(max_tokens_per_text or max_tokens, max_tokens), self._floor)

    def cost(self, text: str) -> int:
        return max(min(len(text) // CHARS_PER_TOKEN + SPECIAL_TOKENS, self._ceiling), self._floor)

    def slices(self, texts: Sequence[str]) -> list[Slice]:
        """Consecutive slices, each within both limits (an empty request is one slice)."""
        out: list[Slice] = []
        current: list[str] = []
        tokens = 0
        for text in texts:
            cost = self.cost(text)
            if current and (tokens + cost > self.max_tokens or len(current) == self.max_texts):
                out.append(Slice(current, tokens))
                current, tokens = [], 0
            current.append(text)
            tokens += cost
        if current or not out:
            out.append(Slice(current, max(tokens, self._floor)))
        return out


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
        # It computes: every core, though its worker may have started on the control
        # plane's (the raylet is kept there, and its new workers inherit that).
        spread_over_node_cores()
        if encoder is None:
            from deployments.embedder.encoder import make_encoder
            from serve.kernel.settings import load_settings

            encoder = make_encoder(spec, model_path, cache_dir=Path(cache_dir) if cache_dir else load_settings().cache_dir)
        if encoder.dimensions != spec.dimensions:
            raise ValueError(
                f"embedder {spec.model_id}: model produces {encoder.dimensions}-d "
                f"vectors but the profile says dimensions={spec.dimensions}"
            )
        self._spec = spec
        self._encoder = encoder
        self._budget = TokenBudget(spec.max_batch_tokens, spec.max_batch_size, getattr(encoder, "max_tokens_per_text", None))
        # The budget and wait come from the profile, not from the decorator.
        self._encode_batched.set_max_batch_size(spec.max_batch_tokens)
        self._encode_batched.set_batch_wait_timeout_s(spec.batch_wait_timeout_s)

    # A batch is measured in estimated tokens, not calls: one call of 2,000 passages
    # would otherwise be one forward pass that every other caller waits behind.
    @serve.batch(max_batch_size=8192, batch_wait_timeout_s=0.01, batch_size_fn=_tokens_in)
    async def _encode_batched(self, slices: list[Slice]) -> list[tuple[np.ndarray, int]]:
        # In a thread: torch releases the GIL, so the replica keeps answering meanwhile.
        return await asyncio.to_thread(encode_requests, self._encoder, [piece.texts for piece in slices])

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Embed ``texts``; returns ``{"vectors": float32 array, "tokens": int}``.

        Long lists go through in slices that each fit one pass, each its own batched
        call, so other callers' texts join the passes in between.
        """
        parts = [await self._encode_batched(piece) for piece in self._budget.slices(list(texts))]
        return {"vectors": np.concatenate([vectors for vectors, _ in parts]), "tokens": sum(t for _, t in parts)}

    async def check_health(self) -> None:
        """Serve health check: the encoder is in memory once constructed."""
        return None
