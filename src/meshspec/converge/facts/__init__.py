"""pyinfra facts, one module per ops module of the same name."""
