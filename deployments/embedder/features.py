"""The tokenization both encoders share: the sentence-transformers model's own, so the
ONNX encoder feeds its graph exactly what the PyTorch model would read."""

from __future__ import annotations

from typing import Sequence


def model_features(model, texts: Sequence[str]):
    """A SentenceTransformer's own tokenization of ``texts`` (padded, truncated tensors)."""
    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 5
    return prepare(list(texts))
