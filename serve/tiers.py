"""``auto`` over N models: the router's score placed on the tiers the profile declares.

The Router scores a request and picks between the extractor and the reasoner. A profile
may declare more tiers above them (``route_from_score`` on a model: e.g. a heavy model
from 0.85): a request the router sent to the reasoner whose score reaches a higher tier
goes there. Placement is residency-aware: when the chosen model is not awake and the
score is within ``router.residency_margin`` of its tier's lower boundary, the request
goes to the tier below when that model is awake, rather than waiting seconds for a wake
it barely needs. ``x-route-reason`` says so. Pins (a model id, ``x-route``) never pass
through here.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.router.decision import RouteDecision
from serve.config import Profile
from serve.health import HealthPicture


@dataclass(frozen=True)
class Tier:
    """Scores from ``floor`` up go to ``model`` (until the next tier's floor)."""

    floor: float
    model: str
    role: str


class Tiers:
    """The profile's tiers, lightest first.

    Args:
        profile: The extractor's tier starts at 0, the reasoner's at ``router.threshold``,
            and every model with ``route_from_score`` starts one of its own.
    """

    def __init__(self, profile: Profile) -> None:
        tiers = [Tier(0.0, profile.extractor.model_id, "extractor"),
                 Tier(profile.router.threshold, profile.reasoner.model_id, "reasoner")]
        tiers += [Tier(spec.route_from_score, spec.model_id, spec.role)
                  for spec in profile.models if spec.route_from_score is not None]
        self.tiers = tuple(sorted(tiers, key=lambda tier: tier.floor))
        self._margin = profile.router.residency_margin

    def place(self, decision: RouteDecision, health: HealthPicture) -> RouteDecision:
        """The router's decision on the profile's tiers (a new object when it changes).

        Only score-based choices move: a decision the router took on other grounds (a
        context that does not fit) stands.
        """
        index = self._index(decision.target)
        if index is None or not self._score_based(decision):
            return decision
        if decision.role == "reasoner":
            while index + 1 < len(self.tiers) and decision.score >= self.tiers[index + 1].floor:
                index += 1
        tier, reason = self.tiers[index], decision.reason
        if tier.model != decision.target:
            reason = f"tier {tier.role}: score {decision.score:.2f} >= {tier.floor:.2f}; {decision.reason}"
        if index > 0 and not health.awake(tier.model) and decision.score < tier.floor + self._margin:
            below = self.tiers[index - 1]
            if health.awake(below.model):
                reason = (f"residency: {tier.model} is {health.model_state(tier.model)} and the score "
                          f"{decision.score:.2f} is within {self._margin:.2f} of its tier ({tier.floor:.2f}); "
                          f"{below.model} is awake; router wanted {decision.target} ({decision.reason})")
                tier = below
        if tier.model == decision.target and reason == decision.reason:
            return decision
        return decision.model_copy(update={"target": tier.model, "role": tier.role, "reason": reason})

    def _index(self, model: str):
        for index, tier in enumerate(self.tiers):
            if tier.model == model:
                return index
        return None

    @staticmethod
    def _score_based(decision: RouteDecision) -> bool:
        above = decision.score >= decision.threshold
        return (decision.role == "reasoner") == above
