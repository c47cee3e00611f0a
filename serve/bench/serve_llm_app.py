"""Ray Serve LLM's own OpenAI app for the profile's extractor (``bench overhead`` target c).

The same ``LLMConfig`` the graph builds (``deployments.llm.builder``), served by
``build_openai_app`` with nothing of ours in front: the baseline that isolates what the
graph's ingress, router and middleware cost on top of Ray Serve LLM.
"""

from __future__ import annotations

from typing import Any


def build(args: dict[str, Any]):
    """``import_path`` target: ``serve.bench.serve_llm_app:build`` with ``{profile}``."""
    from ray.serve.llm import LLMConfig, build_openai_app

    from deployments.llm.builder import llm_config_dict
    from serve.kernel.sources import resolve_source
    from serve.kernel.config import load_profile
    from serve.kernel.settings import load_settings

    profile = load_profile(args.get("profile", "cpu-tiny"))
    spec = profile.extractor
    model_path = resolve_source(spec.source, cache_dir=load_settings().cache_dir)
    config = LLMConfig(**llm_config_dict(spec, device=profile.device, model_path=model_path))
    return build_openai_app({"llm_configs": [config]})
