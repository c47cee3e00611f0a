"""What ``GET /v1/models`` says about each model: role, limits, where its weights came from."""

from __future__ import annotations

from typing import Any

from serve.kernel.config import AUTO_MODEL_ID, LLMSpec, Profile
from serve.kernel.ray_private import ModelCard
from serve.kernel.sources import source_provenance
from serve.kernel.tiers import Tiers

TEST_CHECKPOINT_NOTE = (
    "Generated test checkpoint with RANDOM weights: every serving path is real, the "
    "generated text is meaningless. The `cpu` profile's extractor and the GPU profiles "
    "serve real models."
)


def _card(model_id: str, metadata: dict[str, Any]) -> ModelCard:
    return ModelCard(id=model_id, object="model", owned_by="local-llm-graph", permission=[], metadata=metadata)


def _llm_metadata(spec: LLMSpec, device: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "role": spec.role,
        "description": spec.description,
        "max_model_len": spec.max_model_len,
        "max_tokens_limit": spec.max_tokens_limit,
        "tools": bool(spec.tool_call_parser),
        "reasoning": bool(spec.reasoning_parser),
        "test_checkpoint": spec.is_test_checkpoint,
        "residency": spec.residency,
        "state": "asleep" if spec.on_demand else "awake",
        **source_provenance(spec.source),
    }
    if spec.on_demand:
        meta["sleeps_by"] = spec.mechanism(device)
        if spec.idle_sleep_s is not None:
            meta["idle_sleep_s"] = spec.idle_sleep_s
    if spec.is_test_checkpoint:
        meta["note"] = TEST_CHECKPOINT_NOTE
    return meta


def model_cards(profile: Profile) -> dict[str, ModelCard]:
    """Every model the graph serves, in the order ``/v1/models`` lists them."""
    return {
        AUTO_MODEL_ID: _card(AUTO_MODEL_ID, {
            "role": "router", "policy": profile.router.policy,
            "routes_to": Tiers(profile).routable,
        }),
        **{spec.model_id: _card(spec.model_id, _llm_metadata(spec, profile.device)) for spec in profile.models},
        profile.embedder.model_id: _card(profile.embedder.model_id, {
            "role": "embedder", "dimensions": profile.embedder.dimensions, **source_provenance(profile.embedder.source),
        }),
    }
