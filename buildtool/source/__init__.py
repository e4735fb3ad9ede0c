"""A cell's source tree: fetch and verify the pinned source, apply our patches, lint, prepare (PEP 517)."""
