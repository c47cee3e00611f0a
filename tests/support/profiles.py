"""Helpers that reach one LLM of a profile by its role (raw YAML data or a Profile)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from serve.kernel.config import CONFIGS_DIR, Profile


def llm_entry(raw: dict[str, Any], role: str) -> dict[str, Any]:
    """The ``models:`` entry of ``role`` in a profile's raw YAML data (to edit in place)."""
    return next(entry for entry in raw["models"] if entry["role"] == role)


def with_llm(profile: Profile, role: str, **updates: Any) -> Profile:
    """``profile`` with ``updates`` applied to the model of ``role`` (not re-validated)."""
    models = [spec.model_copy(update=updates) if spec.role == role else spec for spec in profile.models]
    return profile.model_copy(update={"models": models})


def profile_variant(tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], Any]) -> str:
    """The path of a copy of shipped profile ``name`` changed by ``mutate`` (raw YAML data)."""
    raw = yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text())
    mutate(raw)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)
