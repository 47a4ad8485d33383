"""Plan -> reality: the deploy's context, pyinfra operations and facts, the Docker engine and builds."""
