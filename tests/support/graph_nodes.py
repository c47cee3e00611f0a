"""The deployments a bound graph holds, found by walking ``build_graph``'s application
and every handle bound into its arguments (no Ray needed)."""

from __future__ import annotations

from typing import Any


def bound_deployments(node: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every deployment bound under ``node``, by name (Serve's ``Deployment`` objects)."""
    from ray.serve.deployment import Application

    found = {} if found is None else found
    if isinstance(node, Application):
        bound = node._bound_deployment
        if bound.name not in found:
            found[bound.name] = bound
            for arg in [*bound.init_args, *bound.init_kwargs.values()]:
                bound_deployments(arg, found)
    elif isinstance(node, dict):
        for value in node.values():
            bound_deployments(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            bound_deployments(value, found)
    return found
