"""meshspec: a declarative service-mesh spec, converged with pyinfra, proven by tests."""

__version__ = "0.1.0"
