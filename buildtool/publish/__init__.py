"""Serve built wheels: the simple index, its manifest and the web page."""
