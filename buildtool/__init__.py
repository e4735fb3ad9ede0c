"""Build, verify and serve wheels for Mamba-family CUDA kernels."""

__version__ = "0.1.0"
