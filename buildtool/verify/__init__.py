"""Verification of built wheels: static checks (any machine) and GPU checks (numerics, models, speed)."""
