"""Janction provider agent: discovers GPUs, slices them into vGPUs and runs placements."""

__version__ = "0.1.0"
