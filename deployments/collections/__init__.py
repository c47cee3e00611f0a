"""The collections node: the durable store (SQLite rows, a FAISS index per collection, chunking, metadata filters, snapshots) and the singleton Serve deployment that owns its files."""
