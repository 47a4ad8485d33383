"""converge.forward: a channel the host could not connect (a port that does not listen yet, while
the deploy waits for its agent) is not logged as paramiko's error; paramiko's other errors are."""

from __future__ import annotations

import logging

import meshspec.converge.forward  # noqa: F401  (installs the filter)


def logged(message: str) -> bool:
    record = logging.LogRecord("paramiko.transport", logging.ERROR, __file__, 0, message, (), None)
    return logging.getLogger("paramiko.transport").filter(record)


def test_a_refused_channel_is_not_an_error_of_the_deploy():
    assert not logged("Secsh channel 294 open FAILED: Connection refused: Connect failed")
    assert logged("Exception (client): error reading SSH protocol banner")
