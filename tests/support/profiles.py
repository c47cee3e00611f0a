"""Helpers that reach one LLM of a profile by its role (raw YAML data or a Profile)."""

from __future__ import annotations

from typing import Any

from serve.kernel.config import Profile


def llm_entry(raw: dict[str, Any], role: str) -> dict[str, Any]:
    """The ``models:`` entry of ``role`` in a profile's raw YAML data (to edit in place)."""
    return next(entry for entry in raw["models"] if entry["role"] == role)


def with_llm(profile: Profile, role: str, **updates: Any) -> Profile:
    """``profile`` with ``updates`` applied to the model of ``role`` (not re-validated)."""
    models = [spec.model_copy(update=updates) if spec.role == role else spec for spec in profile.models]
    return profile.model_copy(update={"models": models})
