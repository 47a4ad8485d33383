"""pyinfra operations that converge a host to the plan, one module per concern."""
