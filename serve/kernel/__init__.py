"""The graph's kernel: what the HTTP shell (``serve/``) and the graph's nodes
(``deployments/``) both build on.

The profile and the environment settings, the typed errors and their envelope, the
protocol models beyond OpenAI's, request limits and conformance, the health picture,
routing's data types, the model sources and memory planners the profile is validated
against, the CPU machinery (core plan, affinity, one event loop per replica), every
private Ray/vLLM name the project reads (``ray_private``), and the dispatcher that
every LLM call goes through.

The kernel imports nothing from the shell or from ``deployments/``
(``tests/unit/test_layers.py`` draws the imports and checks it), so a deployment can
use the dispatcher without pulling in the HTTP app, and the shell can change without
touching a node.
"""
