"""Developer tooling: the local stack runner and the scripts that drive it."""
