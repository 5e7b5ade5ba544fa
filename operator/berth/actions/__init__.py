"""One-shot actions of the `berth` command (a prune run, a promotion, a TagPolicy's tag
history, the kube context): each does its work through the API server and returns data;
berth.cli prints it. Failures a person can act on raise ActionError (or one of the
problems of the blocks below: RegistryProblem, RegistryError, ApiException, ...)."""


class ActionError(Exception):
    """The action cannot be done; the message says why."""
