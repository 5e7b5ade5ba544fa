"""Pure builders: a spec goes in, Kubernetes manifests come out. Nothing here talks to
the API server; the builders are unit-tested without a cluster."""
