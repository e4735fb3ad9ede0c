"""Compile the kernel specs of a prepared tree into extension modules: plan, ninja, object cache, progress."""
