"""The model ids of the profile the shared test graph runs (``cpu``), in one place."""

PROFILE = "cpu"
#: The real SmolLM2-135M-Instruct: its answers are judged as text.
EXTRACTOR = "smollm2-135m-instruct"
#: A random-weight tiny Qwen3: only the serving contract is judged, never its text.
REASONER = "qwen3-tiny-reasoner"
EMBEDDER = "all-minilm-l6-v2"
