"""The embedder node: sentence-transformers behind request batching."""
