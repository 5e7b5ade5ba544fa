"""Thin kopf decorators. Importing `berth.handlers.registry` etc. registers them."""
