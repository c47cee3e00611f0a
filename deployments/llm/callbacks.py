"""Ray Serve LLM engine-start callback: the hooks the graph's engines start through.

* **Local weights skip the download step.** Before starting an engine, Ray Serve LLM runs
  a Ray task on every node of the replica's placement group to download the model files.
  For weights that already sit in a local directory (the generated test checkpoints, a
  model shipped in a package, a path in the profile) that task downloads nothing but
  still costs a worker process and ~20 s of a 2-core machine per engine.
* **The engine is built off the event loop.** After node initialisation (the last awaited
  step of Ray Serve LLM's engine start) the engine's blocking steps run in a thread
  (:mod:`deployments.llm.engine`).
"""

from __future__ import annotations

from serve.kernel.ray_private import CallbackBase


class EngineStartCallback(CallbackBase):
    """Skips the per-node download for local weights; builds the engine off the loop.

    Args (``callback_kwargs``):
        local_weights: The weights are a local directory: nothing to download.
    """

    async def on_before_node_init(self) -> None:
        if self.kwargs.get("local_weights"):
            self.ctx.run_init_node = False

    async def on_after_node_init(self) -> None:
        from deployments.llm.engine import ENGINE_KEY

        engine = self.ctx.custom_data.get(ENGINE_KEY)
        if engine is not None:
            await engine.build_off_loop(self.ctx)
