"""Where the mesh's Consul token comes from: one rule for the deploy, verify and the controller.

A real Consul's token is given in CONSUL_HTTP_TOKEN, as Consul's own CLI reads it; the embedded
agent's is made once by the deploy. Either way the deploy keeps it in the mesh's token file
(mode 0600), so every reader after the deploy takes it from there.
"""

from __future__ import annotations

import os
from pathlib import Path

TOKEN_ENV = "CONSUL_HTTP_TOKEN"


def token_in(text: str | list[str] | None) -> str | None:
    """The token in a token file's text (or its lines, as pyinfra's FileContents reads them)."""
    lines = text.splitlines() if isinstance(text, str) else (text or [])
    return (lines[0].strip() or None) if lines else None


def read_token(token_file: str | Path | None, environ=os.environ, missing_ok: bool = False) -> str | None:
    """The token in `token_file` when one is given, else CONSUL_HTTP_TOKEN, else None (a registry
    without ACLs). A token file that cannot be read raises OSError; with `missing_ok`, one that does
    not exist (yet: the deploy makes it) counts as not given."""
    try:
        found = token_in(Path(token_file).read_text()) if token_file else None
    except FileNotFoundError:
        if not missing_ok:
            raise
        found = None
    return found or environ.get(TOKEN_ENV) or None
