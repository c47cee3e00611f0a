"""The complexity router: decides whether a request needs the reasoner."""
