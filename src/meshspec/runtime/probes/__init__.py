"""Protocol-level health probes (a real handshake, never a bare TCP connect or HTTP 200)."""

from meshspec.runtime.probes.mcp import McpResult, probe_mcp

__all__ = ["McpResult", "probe_mcp"]
