"""The model ids of the profile the shared test graph runs (``cpu``), and the tool the
suite calls them with, in one place."""

PROFILE = "cpu"
#: The real SmolLM2-135M-Instruct: its answers are judged as text.
EXTRACTOR = "smollm2-135m-instruct"
#: A random-weight tiny Qwen3: only the serving contract is judged, never its text.
REASONER = "qwen3-tiny-reasoner"
EMBEDDER = "all-minilm-l6-v2"
#: The cpu profile's `auto` never answers with the random-weight reasoner; the tests of the
#: routing, capacity and fallback mechanics between the two models ask for it per request.
ALLOW_RANDOM = {"x-route-random-weights": "allow"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            # The pattern also bounds the argument (a sampled reply cannot ramble).
            "properties": {"city": {"type": "string", "pattern": "^[A-Za-z][A-Za-z ]{0,29}$"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
