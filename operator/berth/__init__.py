"""Berth: an operator for cluster-local container registries."""

__version__ = "0.1.0"
