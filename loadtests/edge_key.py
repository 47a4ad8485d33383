"""The edge's API key for the chaos locustfiles (route.py, mcp_sessions.py): MESH_API_KEY_FILE names
a consumer's key file, 0600, read here; the key itself never passes through the environment."""

from __future__ import annotations

import os
from pathlib import Path

KEY_FILE = os.environ.get("MESH_API_KEY_FILE")
EDGE_HEADERS = {"X-API-Key": Path(KEY_FILE).read_text().strip()} if KEY_FILE else {}
