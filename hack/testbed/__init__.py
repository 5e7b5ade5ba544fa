"""Berth's test bed: a real local control plane and a real registry, no Docker."""
