"""Wheels: names and tags, writing a reproducible wheel, repair (auditwheel / delvewheel)."""
