"""``auto`` over N models: the router's score placed on the tiers the profile declares.

The Router scores a request and picks between the extractor and the reasoner. A profile
may declare more tiers above them (``route_from_score`` on a model: e.g. a heavy model
from 0.85): a request the router sent to the reasoner whose score reaches a higher tier
goes there.

Two rules then move a request down:

* **No noise by default.** A model with random weights (a generated test checkpoint) is
  not a tier ``auto`` may land on unless the profile opts in
  (``router.allow_random_weights``): the request goes to the highest tier below it that
  has real weights, and the reason says ``<role> has random weights``. Naming the model
  still reaches it.
* **Residency.** When the chosen model is not awake and the score is within
  ``router.residency_margin`` of its tier's lower boundary, the request goes to the tier
  below when that model is awake, rather than waiting seconds for a wake it barely needs.

``x-route-reason`` says which rule applied. Pins (a model id, ``x-route``) never pass
through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from serve.kernel.config import Profile
from serve.kernel.health import HealthPicture
from serve.kernel.routing import RouteDecision


@dataclass(frozen=True)
class Tier:
    """Scores from ``floor`` up go to ``model`` (until the next tier's floor)."""

    floor: float
    model: str
    role: str
    routable: bool = True
    """False for a model with random weights in a profile that does not let ``auto`` use them."""


class Tiers:
    """The profile's tiers, lightest first.

    Args:
        profile: The extractor's tier starts at 0, the reasoner's at ``router.threshold``,
            and every model with ``route_from_score`` starts one of its own.
    """

    def __init__(self, profile: Profile) -> None:
        allow_random = profile.router.allow_random_weights

        def tier(floor: float, spec) -> Tier:
            return Tier(floor, spec.model_id, spec.role, routable=allow_random or not spec.is_test_checkpoint)

        tiers = [tier(0.0, profile.extractor), tier(profile.router.threshold, profile.reasoner)]
        tiers += [tier(spec.route_from_score, spec) for spec in profile.models if spec.route_from_score is not None]
        self.tiers = tuple(sorted(tiers, key=lambda t: t.floor))
        self._margin = profile.router.residency_margin
        self._unroutable = frozenset() if allow_random else frozenset(
            spec.model_id for spec in profile.models if spec.is_test_checkpoint)

    @property
    def routable(self) -> list[str]:
        """The models ``auto`` may answer with, lightest first."""
        return [tier.model for tier in self.tiers if tier.routable]

    def may_answer_auto(self, model: str, *, allow_random: bool = False) -> bool:
        """Whether ``auto`` traffic (a routing decision or a fallback) may go to ``model``
        (``allow_random``: the request asked for random weights too)."""
        return allow_random or model not in self._unroutable

    def place(self, decision: RouteDecision, health: HealthPicture, *, allow_random: bool = False) -> RouteDecision:
        """The router's decision on the profile's tiers (a new object when it changes).

        Only score-based choices climb tiers or step down for residency; a decision the
        router took on other grounds (a context that does not fit) stands, unless its
        model has random weights that ``auto`` may not use (``allow_random``: the request
        asked for them, ``x-route-random-weights: allow``).
        """
        index = self._index(decision.target)
        if index is None:
            return decision
        score_based = self._score_based(decision)
        if score_based and decision.role == "reasoner":
            while index + 1 < len(self.tiers) and decision.score >= self.tiers[index + 1].floor:
                index += 1
        reason = decision.reason
        if self.tiers[index].model != decision.target:
            tier = self.tiers[index]
            reason = f"tier {tier.role}: score {decision.score:.2f} >= {tier.floor:.2f}; {decision.reason}"
        if not (self.tiers[index].routable or allow_random):
            wanted = self.tiers[index]
            index = self._routable_at_or_below(index)
            reason = (f"{wanted.role} has random weights (router.allow_random_weights is off); "
                      f"router wanted {wanted.model} ({reason})")
        elif score_based:
            index, reason = self._for_residency(index, decision, health, reason, allow_random)
        tier = self.tiers[index]
        if tier.model == decision.target and reason == decision.reason:
            return decision
        return decision.model_copy(update={"target": tier.model, "role": tier.role, "reason": reason})

    def _for_residency(self, index: int, decision: RouteDecision, health: HealthPicture,
                       reason: str, allow_random: bool) -> tuple[int, str]:
        """The awake tier below, when ``index``'s model sleeps and the score barely reaches it."""
        tier = self.tiers[index]
        below = (index - 1 if allow_random else self._routable_at_or_below(index - 1)) if index > 0 else None
        if below is None or health.awake(tier.model) or decision.score >= tier.floor + self._margin:
            return index, reason
        lower = self.tiers[below]
        if not health.awake(lower.model):
            return index, reason
        return below, (f"residency: {tier.model} is {health.model_state(tier.model)} and the score "
                       f"{decision.score:.2f} is within {self._margin:.2f} of its tier ({tier.floor:.2f}); "
                       f"{lower.model} is awake; router wanted {decision.target} ({decision.reason})")

    def _routable_at_or_below(self, index: int) -> Optional[int]:
        while index >= 0 and not self.tiers[index].routable:
            index -= 1
        return index if index >= 0 else None

    def _index(self, model: str) -> Optional[int]:
        for index, tier in enumerate(self.tiers):
            if tier.model == model:
                return index
        return None

    @staticmethod
    def _score_based(decision: RouteDecision) -> bool:
        above = decision.score >= decision.threshold
        return (decision.role == "reasoner") == above
