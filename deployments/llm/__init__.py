"""The extractor and reasoner nodes: ``ray.serve.llm`` LLMServer deployments on vLLM."""
