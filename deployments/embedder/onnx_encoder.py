"""The same sentence-transformers model, run by ONNX Runtime on the CPU.

Why: on a CPU, a one-sentence query through PyTorch's eager mode spends most of its
time dispatching a few hundred small ops, not computing. ONNX Runtime runs the same
graph with fused attention, layer-norm and GELU kernels and little per-op cost, so a
routing prompt embeds several times faster and batches of long chunks are no slower
(``python -m serve bench router`` measures both encoders side by side; the README has
the figures). That is what lets the semantic router decide inside its latency budget.

How: the sentence-transformers model (tokenizer, transformer and pooling) is exported
once with ``torch.onnx.export`` and, for BERT-like models, fused by ONNX Runtime's
transformer optimizer. The file is cached under ``<cache_dir>/onnx/<key>/`` (the key
covers the model files and the library versions), written atomically under a file
lock so concurrent replicas export once. Before it is used, its vectors are compared
with PyTorch's on probe texts; any mismatch or export failure raises
:class:`OnnxUnavailable`, and :func:`deployments.embedder.encoder.make_encoder` falls back
to PyTorch. Tokenization stays sentence-transformers' own, so token counts and
truncation are identical in both backends.

sentence-transformers' own ``backend="onnx"`` needs optimum-onnx, which requires
transformers < 4.58 and so cannot be installed beside vLLM; hence this small module.
ONNX files are protobuf, not pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Bump when the export recipe changes, so cached files from an older recipe are ignored.
EXPORT_RECIPE = 2
#: Largest absolute difference from PyTorch's (normalised) vectors accepted at load.
PARITY_TOLERANCE = 1e-4
#: With int8 weights, the least cosine similarity to PyTorch's vectors accepted at load
#: (all-MiniLM-L6-v2: 0.92 at worst over 40 varied sentences; routing accuracy 0.956
#: against 0.947 at full precision on the evaluation set).
INT8_MIN_COSINE = 0.9
_PROBES = (
    "Senior backend engineer, $150k-$180k plus equity, remote in the US.",
    "Prove that the square root of 2 is irrational.",
    "hi",
)
#: ONNX Runtime's transformer optimizer knows these architectures' fusion patterns.
_OPTIMIZABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert"}


class OnnxUnavailable(RuntimeError):
    """The model could not be exported, loaded or matched to PyTorch in ONNX Runtime."""


class OnnxEncoder:
    """A sentence-transformers model served by ONNX Runtime (CPU).

    Args:
        model_path: Directory of a sentence-transformers model.
        cache_dir: Where exported graphs are kept (``<cache_dir>/onnx``).
        normalize: L2-normalise the vectors.
        cpu_threads: ONNX Runtime intra-op threads (None: one per core).
        int8: Run int8 weights (dynamic quantization of the export, cached beside it).

    Raises:
        OnnxUnavailable: export, load or the parity check failed.
    """

    def __init__(self, model_path: str, *, cache_dir: Path, normalize: bool, cpu_threads: Optional[int] = None,
                 int8: bool = False) -> None:
        try:
            import onnxruntime as ort
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # onnxruntime is in the `cpu` extra
            raise OnnxUnavailable(f"ONNX backend needs onnxruntime and onnx: {exc}") from exc

        # Eager attention exports to the plain pattern ONNX Runtime knows how to fuse.
        self._model = SentenceTransformer(model_path, device="cpu", model_kwargs={"attn_implementation": "eager"})
        self._normalize = normalize
        self.dimensions = int(self._model.get_sentence_embedding_dimension())
        self.max_tokens_per_text = self._model.max_seq_length
        self._inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in self._prepare(["x"])]
        path = self._exported(Path(cache_dir), model_path)
        self.int8 = int8
        if int8:
            path = self._quantized(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_threads or 0
        options.inter_op_num_threads = 1
        # ONNX Runtime's threads spin for a while after each run, waiting for more work: on a
        # CPU box that is a core taken from the LLM engine that computes the request next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise OnnxUnavailable(f"ONNX Runtime could not load {path}: {exc}") from exc
        self._check_parity(torch)

    # ------------------------------------------------------------------ export
    def _prepare(self, texts: Sequence[str]):
        from deployments.embedder.features import model_features

        return model_features(self._model, texts)

    def _cache_key(self, model_path: str) -> str:
        import onnxruntime
        import sentence_transformers
        import torch
        import transformers

        digest = hashlib.sha256()
        root = Path(model_path)
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        digest.update(json.dumps([
            EXPORT_RECIPE, torch.__version__, onnxruntime.__version__,
            sentence_transformers.__version__, transformers.__version__,
        ]).encode())
        return digest.hexdigest()[:24]

    def _exported(self, cache_dir: Path, model_path: str) -> Path:
        """The cached ONNX file for this model, exporting it first if needed."""
        from filelock import FileLock

        target_dir = cache_dir / "onnx" / self._cache_key(model_path)
        target = target_dir / "model.onnx"
        target_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target_dir / ".lock")):
            if not target.exists():
                tmp = target_dir / f"model.onnx.tmp-{os.getpid()}"
                try:
                    self._export(tmp)
                    with open(tmp, "rb") as handle:
                        os.fsync(handle.fileno())
                    os.replace(tmp, target)
                except OnnxUnavailable:
                    raise
                except Exception as exc:
                    raise OnnxUnavailable(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
                finally:
                    tmp.unlink(missing_ok=True)
                logger.info("exported the embedding model to %s", target)
        return target

    @staticmethod
    def _quantized(exported: Path) -> Path:
        """The int8 version of an exported model (cached beside it, written atomically)."""
        from filelock import FileLock

        target = exported.with_name("model.int8.onnx")
        with FileLock(str(exported.parent / ".lock")):
            if not target.exists():
                tmp = exported.with_name(f"model.int8.onnx.tmp-{os.getpid()}")
                try:
                    import onnx
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    # Fused nodes lack inferred types; their weights are float32.
                    quantize_dynamic(str(exported), str(tmp), weight_type=QuantType.QInt8,
                                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                    os.replace(tmp, target)
                except Exception as exc:
                    raise OnnxUnavailable(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
                finally:
                    tmp.unlink(missing_ok=True)
        return target

    def _export(self, path: Path) -> None:
        import warnings

        import torch

        model, names = self._model, self._inputs

        class SentenceEmbedding(torch.nn.Module):
            """Token tensors in, pooled sentence vector out (pooling included)."""

            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                return self.model(dict(zip(names, tensors)))["sentence_embedding"]

        sample = self._prepare(list(_PROBES[:2]))
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: torch.export cannot trace transformers 5's mask
            # construction yet, and torch is pinned, so this path stays available.
            torch.onnx.export(
                SentenceEmbedding().eval(), tuple(sample[name] for name in names), str(path),
                input_names=names, output_names=["sentence_embedding"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names},
                opset_version=17, dynamo=False,
            )
        self._optimize(path)

    def _optimize(self, path: Path) -> None:
        """Fuse attention / layer-norm / GELU where ONNX Runtime knows the architecture."""
        config = self._model[0].auto_model.config
        kind = _OPTIMIZABLE.get(getattr(config, "model_type", ""))
        if kind is None:
            return
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(path), model_type=kind, num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
        optimized.save_model_to_file(str(path))

    def _check_parity(self, torch) -> None:
        with torch.inference_mode():
            reference = self._model.encode(list(_PROBES), normalize_embeddings=True, convert_to_numpy=True)
        vectors = self._run(self._prepare(list(_PROBES)), normalize=True)
        if self.int8:
            cosine = float((vectors * reference).sum(axis=1).min())
            if not cosine >= INT8_MIN_COSINE:
                raise OnnxUnavailable(f"int8 vectors have cosine {cosine:.3f} to PyTorch's (< {INT8_MIN_COSINE})")
            return
        gap = float(np.abs(vectors - reference).max())
        if not gap <= PARITY_TOLERANCE:
            raise OnnxUnavailable(f"ONNX vectors differ from PyTorch's by {gap:.2e} (> {PARITY_TOLERANCE})")

    # --------------------------------------------------------------- encoding
    def _run(self, features, *, normalize: bool) -> np.ndarray:
        feeds = {name: features[name].numpy().astype(np.int64, copy=False) for name in self._inputs}
        vectors = self._session.run(None, feeds)[0].astype(np.float32, copy=False)
        if normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_counted(texts)[0]

    def encode_counted(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors and each text's token count from one tokenization."""
        features = self._prepare(texts)
        counts = [int(c) for c in features["attention_mask"].sum(dim=1).tolist()]
        return self._run(features, normalize=self._normalize), counts

    def count_tokens(self, texts: Sequence[str]) -> int:
        return int(self._prepare(texts)["attention_mask"].sum()) if texts else 0
