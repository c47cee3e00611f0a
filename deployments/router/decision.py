"""Turn a policy score into a routing decision with a human-readable reason."""

from __future__ import annotations

from deployments.router.policies import RoutingPolicy
from serve.kernel.routing import RouteDecision, RouteInput, RouteTargets

# A rough, tokenizer-free estimate; good enough to keep prompts out of a model whose
# context they cannot fit in.
CHARS_PER_TOKEN = 4


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
