"""The Collections deployment: the singleton that owns the collection files."""
