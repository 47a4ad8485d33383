"""JSON-RPC error codes meshspec answers with on MCP routes (the proxy's refusals, the task runner's
header check): the spec's Invalid Request; the mcp SDK's header mismatch
(mcp_types.jsonrpc.HEADER_MISMATCH); and, from the range JSON-RPC leaves to implementations,
forbidden."""

INVALID_REQUEST = -32600
HEADER_MISMATCH = -32001
FORBIDDEN = -32003
