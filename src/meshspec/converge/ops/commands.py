"""The Python commands of meshspec's operations, failing as one line.

pyinfra prints the traceback of anything a FunctionCommand's callable raises ("Unexpected error in
Python callback"); an expected failure (the registry refused a call, an instance never passed)
should read as what happened, not as a crash of meshspec.
"""

from __future__ import annotations

import logging

import consul
import requests
from pyinfra.api import FunctionCommand, OperationError
from pyinfra.context import ctx_config, ctx_host

logger = logging.getLogger("pyinfra")

#: What a registry call raises when the registry is down or refuses: reported, never a traceback.
UNREACHABLE = (requests.exceptions.RequestException, consul.ConsulException)
EXPECTED = (OperationError, *UNREACHABLE)


def reported(function, *args) -> FunctionCommand:
    """A command running `function(*args)` on the operation's host; an expected failure fails the
    operation with its message, in red under the host's name."""
    def call(state, host) -> bool:  # pyinfra passes both to a callable that names them
        try:
            with ctx_config.use(state.config.copy()), ctx_host.use(host):  # as pyinfra sets them for a callback
                function(*args)
        except EXPECTED as err:
            # an OperationError's message is already the operation's own line; others get their type
            message = str(err) if isinstance(err, OperationError) else f"{type(err).__name__}: {err}"
            host.log_styled(message, fg="red", log_func=logger.error)
            return False
        return True
    return FunctionCommand(call, (), {})
