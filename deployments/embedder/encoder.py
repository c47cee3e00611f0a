"""Text encoders: the interface the Embedder deployment needs, and the real ones.

The deployment depends on :class:`Encoder` only, so unit tests inject a small fake and
the real encoders (PyTorch's :class:`SentenceTransformerEncoder`, or ONNX Runtime's in
``onnx_encoder.py``; :func:`make_encoder` picks by the profile) load only inside the
replica.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

from deployments.embedder.features import model_features

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    """Turns texts into fixed-size float32 vectors."""

    dimensions: int
    #: Tokens the model reads of one text (it truncates the rest); None when unknown.
    max_tokens_per_text: Optional[int]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dimensions)``, dtype float32."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model would read for ``texts`` (for usage reporting)."""
        ...


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local path or hub id.

    Args:
        model_path: Directory (or hub id) of the model.
        normalize: L2-normalise the vectors so cosine similarity is a dot product.
        device: torch device; None lets sentence-transformers choose.
        cpu_threads: torch intra-op threads (None keeps the process setting).
    """

    def __init__(self, model_path: str, *, normalize: bool, device: Optional[str], cpu_threads: Optional[int] = None) -> None:
        from sentence_transformers import SentenceTransformer

        if cpu_threads:
            import torch

            torch.set_num_threads(cpu_threads)

        self._model = SentenceTransformer(model_path, device=device)
        self._normalize = normalize
        self.dimensions = int(self._model.get_sentence_embedding_dimension())
        self.max_tokens_per_text = self._model.max_seq_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=max(len(texts), 1),
            normalize_embeddings=self._normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_counted(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors and each text's token count from one tokenization (usage for free)."""
        import torch

        features = model_features(self._model, texts)
        counts = features["attention_mask"].sum(dim=1).tolist()
        features = {name: value.to(self._model.device) if hasattr(value, "to") else value for name, value in features.items()}
        with torch.inference_mode():
            vectors = self._model.forward(features)["sentence_embedding"]
            if self._normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.float().cpu().numpy(), [int(c) for c in counts]

    def count_tokens(self, texts: Sequence[str]) -> int:
        tokenizer = self._model.tokenizer
        limit = self._model.max_seq_length
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=limit)
        return sum(len(ids) for ids in encoded["input_ids"])


def make_encoder(spec, model_path: str, *, cache_dir: Path, int8: bool = False) -> Encoder:
    """The encoder a profile's ``embedder:`` block asks for (``int8``: the router's copy,
    with int8 weights when the backend is ONNX).

    ``backend: onnx`` runs the model in ONNX Runtime (CPU); if it cannot be exported or
    does not match PyTorch, the embedder logs why and serves with PyTorch instead, so a
    model the exporter cannot handle still works.
    """
    if spec.backend == "onnx":
        from deployments.embedder.onnx_encoder import OnnxEncoder, OnnxUnavailable

        try:
            return OnnxEncoder(model_path, cache_dir=cache_dir, normalize=spec.normalize, cpu_threads=spec.cpu_threads,
                               int8=int8)
        except OnnxUnavailable as exc:
            logger.warning("embedder %s: ONNX backend unavailable, using PyTorch: %s", spec.model_id, exc)
    return SentenceTransformerEncoder(model_path, normalize=spec.normalize, device=spec.device, cpu_threads=spec.cpu_threads)


def encode_requests(encoder: Encoder, requests: Sequence[Sequence[str]]) -> list[tuple[np.ndarray, int]]:
    """Encode the texts of several requests in one forward pass, then split them back.

    This is what makes request batching pay: concurrent callers share one model call.
    Returns each request's vectors and its token count (for usage reporting).
    """
    flat = [text for texts in requests for text in texts]
    if not flat:
        vectors, counts = np.zeros((0, encoder.dimensions), np.float32), []
    elif hasattr(encoder, "encode_counted"):
        vectors, counts = encoder.encode_counted(flat)
    else:
        vectors = encoder.encode(flat)
        counts = None
    out, start = [], 0
    for texts in requests:
        part = vectors[start : start + len(texts)]
        tokens = sum(counts[start : start + len(texts)]) if counts is not None else encoder.count_tokens(texts) if texts else 0
        out.append((part, tokens))
        start += len(texts)
    return out
