"""One-shot actions of the `berth` command: each does its work through the API server
and returns data; berth.cli prints it."""
