"""Access to the Kubernetes API: client construction, plain-dict requests, server-side
apply, and platform detection."""
