"""Errors that become Consul-style plain-text HTTP responses."""

from __future__ import annotations


class ConsulError(Exception):
    """An error answered with `status` and Consul's message text, never a traceback."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ConsulError:
    return ConsulError(400, message)


def not_found(message: str) -> ConsulError:
    return ConsulError(404, message)


def decode_failed(reason: str) -> ConsulError:
    return ConsulError(400, f"Request decode failed: {reason}")
