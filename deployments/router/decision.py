"""Turn a policy score into a routing decision with a human-readable reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.router.features import RouteInput
from deployments.router.policies import RoutingPolicy

# A rough, tokenizer-free estimate; good enough to keep prompts out of a model whose
# context they cannot fit in.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class RouteTargets:
    """The two LLM roles the router chooses between, with their context limits."""

    extractor: str
    reasoner: str
    extractor_max_model_len: int
    reasoner_max_model_len: int

    @classmethod
    def of(cls, profile) -> "RouteTargets":
        """The targets of a profile (``serve.config.Profile``)."""
        return cls(extractor=profile.extractor.model_id, reasoner=profile.reasoner.model_id,
                   extractor_max_model_len=profile.extractor.max_model_len,
                   reasoner_max_model_len=profile.reasoner.max_model_len)


class RouteDecision(BaseModel):
    """Where a request goes and why: the router's answer, the dispatcher's final word
    (after pins, admission and fallback), and the body of ``POST /v1/route``."""

    model_config = ConfigDict(frozen=True)

    target: str = Field(description="Model id the request would be sent to.")
    role: str = Field(description="extractor or reasoner.")
    reason: str = Field(description="Why, in one line (also the x-route-reason header).")
    policy: str
    score: float
    threshold: float
    features: dict[str, Any] = Field(default_factory=dict)
    pinned: bool = Field(False, description="True when the client named the model.")
    random_weights_allowed: bool = Field(
        False, description="The request let `auto` answer with random-weight models (`x-route-random-weights: allow`), "
        "in its decision and its fallbacks, in a profile that does not (router.allow_random_weights).")


def decide(
    request: RouteInput,
    *,
    policy: RoutingPolicy,
    threshold: float,
    targets: RouteTargets,
) -> RouteDecision:
    """Score ``request`` with ``policy`` and pick the extractor or the reasoner."""
    verdict = policy.score(request)
    features = dict(verdict.features)
    est_tokens = len(request.text) // CHARS_PER_TOKEN + (request.max_tokens or 0)
    features["estimated_tokens"] = est_tokens

    if verdict.score >= threshold:
        role, reason = "reasoner", f"score {verdict.score:.2f} >= {threshold:.2f}"
    else:
        role, reason = "extractor", f"score {verdict.score:.2f} < {threshold:.2f}"

    # Context fit overrides the score: a prompt that cannot fit one model goes to the
    # other when that one can hold it.
    if role == "extractor" and est_tokens > targets.extractor_max_model_len:
        if est_tokens <= targets.reasoner_max_model_len:
            role, reason = "reasoner", "context exceeds extractor max_model_len"
    elif role == "reasoner" and est_tokens > targets.reasoner_max_model_len:
        if est_tokens <= targets.extractor_max_model_len:
            role, reason = "extractor", "context exceeds reasoner max_model_len"

    target = targets.reasoner if role == "reasoner" else targets.extractor
    return RouteDecision(
        target=target,
        role=role,
        reason=f"{policy.name}: {reason}",
        policy=policy.name,
        score=verdict.score,
        threshold=threshold,
        features=features,
    )
