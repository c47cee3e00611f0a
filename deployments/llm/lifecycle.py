"""How one LLM replica's engine lives: whether it starts awake, how it sleeps, and (on a
GPU) how much of the card it may take.

It travels inside the model's ``LLMConfig`` (``experimental_configs``, Ray Serve LLM's
public place for settings of one's own), so the server and the engine classes are plain
module-level classes that Ray Serve LLM builds from its config, with nothing baked into
a class at bind time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

#: The key of the lifecycle in ``LLMConfig.experimental_configs``.
CONFIG_KEY = "llmgraph_engine_lifecycle"


@dataclass(frozen=True)
class EngineLifecycle:
    """How one LLM replica's engine lives.

    ``mechanism`` is how it sleeps: ``level1`` (vLLM sleep level 1: weights to host RAM,
    KV cache dropped; GPU only), ``level2`` (weights and KV cache dropped, weights
    reloaded on wake), or ``stop`` (the engine is shut down and started again on wake:
    the only mechanism that frees memory on CPU).
    """

    start_awake: bool = True
    mechanism: str = "stop"
    serialize_start: bool = False
    """GPU: engines start one at a time (``deployments/llm/safe_start.py``)."""
    memory_budget_gib: Optional[float] = None
    """GPU: the engine's share of the profile's ``gpu_memory_gib``. On a card of another
    size vLLM gets the same GiB, not the same fraction."""

    def into(self, experimental_configs: dict[str, Any]) -> dict[str, Any]:
        """``experimental_configs`` with this lifecycle in it (a new dict)."""
        return {**experimental_configs, CONFIG_KEY: asdict(self)}

    @classmethod
    def of(cls, llm_config: Any) -> "EngineLifecycle":
        """The lifecycle an ``LLMConfig`` carries (an always-awake engine when it has none)."""
        return cls(**(llm_config.experimental_configs or {}).get(CONFIG_KEY, {}))
