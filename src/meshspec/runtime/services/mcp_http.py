"""`meshspec serve mcp-http`: a generic HTTP-request MCP server (the mesh's `http` service).

Written with the official ``mcp`` SDK (``MCPServer``), served over Streamable HTTP at ``/mcp`` with
stateful sessions. Tools:

- ``http_request(url, method='GET', headers={}, body=None, timeout_s=10, follow_redirects=False)``
- ``http_get(url, headers={}, timeout_s=10)`` — the same, for the common case

Each answers ``{status, reason, url, headers, body, body_encoding, body_bytes, truncated, elapsed_ms}``:

- ``body`` holds at most ``MAX_BODY_BYTES`` (256 KiB) of the response; ``truncated`` says whether the
  response was longer, ``body_bytes`` how many bytes were read (at most ``MAX_BODY_BYTES + 1``);
- ``body_encoding`` is ``text`` when the bytes decode in the response's charset (UTF-8 when it names
  none) and ``base64`` otherwise (images, archives, ...);
- ``elapsed_ms`` runs from sending the request to the end of the body that was read.

A request that cannot be made (bad URL, unsupported method, connection refused, DNS failure, timeout)
comes back as a tool error (``isError: true``) with a one-line message naming the URL and the cause;
the server keeps running. The client ignores proxy environment variables: requests go where the URL
says.
"""

from __future__ import annotations

import base64
import codecs
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, WrapValidator

#: The most response-body bytes a tool result carries.
MAX_BODY_BYTES = 256 * 1024
#: The most a request body may hold (as text).
MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024
MAX_TIMEOUT_S = 300.0
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
USER_AGENT = "meshspec-mcp-http/1"


#: ``str`` or null. Declared as plain ``str`` on purpose: MCPServer json-decodes string arguments of any
#: other annotation (``str | None`` included), which would turn a JSON request body into a dict.
_OPTIONAL = WrapValidator(lambda value, handler: None if value is None else handler(value))


def build_server() -> MCPServer:
    """The MCP server with its two tools; one shared connection pool per process."""
    server = MCPServer(
        "meshspec-http",
        version="1",
        instructions="Make HTTP requests: http_request for any method, http_get for a plain GET.",
        log_level="WARNING",
    )
    pool: dict[str, httpx.AsyncClient] = {}

    def client() -> httpx.AsyncClient:
        # Created lazily inside the server's event loop; connections are kept alive between calls.
        if "c" not in pool:
            pool["c"] = httpx.AsyncClient(trust_env=False, headers={"User-Agent": USER_AGENT},
                                          limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
        return pool["c"]

    @server.tool()
    async def http_request(
        url: Annotated[str, Field(description="Absolute http:// or https:// URL.")],
        method: Annotated[str, Field(description="One of " + ", ".join(METHODS) + ".")] = "GET",
        headers: Annotated[dict[str, str] | None, Field(description="Request headers.")] = None,
        body: Annotated[str, _OPTIONAL, Field(description="Request body, sent UTF-8 encoded, byte for byte.",
                                              json_schema_extra={"type": ["string", "null"]})] = None,
        timeout_s: Annotated[float, Field(description="Seconds for connect, each read and write.")] = 10.0,
        follow_redirects: bool = False,
    ) -> dict[str, Any]:
        """Send one HTTP request and return status, headers, body and elapsed time.

        The body of the response is text when it decodes in its charset, else base64
        (see body_encoding); at most 256 KiB of it is returned (see truncated).
        Connection failures and timeouts are reported as errors.
        """
        return await perform(client(), url, method, headers or {}, body, timeout_s, follow_redirects)

    @server.tool()
    async def http_get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
        """GET a URL (redirects followed) and return status, headers, body and elapsed time."""
        return await perform(client(), url, "GET", headers or {}, None, timeout_s, True)

    return server


async def perform(client: httpx.AsyncClient, url: str, method: str, headers: dict[str, str], body: str | None,
                  timeout_s: float, follow_redirects: bool) -> dict[str, Any]:
    """Make the request; raise ``ToolError`` with a one-line reason when it cannot be made."""
    method = method.strip().upper()
    if method not in METHODS:
        raise ToolError(f"unsupported method {method!r}: use one of {', '.join(METHODS)}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"bad URL {url!r}: an absolute http:// or https:// URL is required")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ToolError(f"timeout_s must be more than 0 and at most {MAX_TIMEOUT_S:g}")
    content = body.encode() if body is not None else None
    if content is not None and len(content) > MAX_REQUEST_BODY_BYTES:
        raise ToolError(f"request body of {len(content)} bytes exceeds {MAX_REQUEST_BODY_BYTES}")

    started = time.monotonic()
    try:
        request = client.build_request(method, url, headers=headers, content=content,
                                       timeout=httpx.Timeout(timeout_s))
        response = await client.send(request, stream=True, follow_redirects=follow_redirects)
        try:
            data = bytearray()
            async for chunk in response.aiter_raw() if method == "HEAD" else response.aiter_bytes():
                data += chunk
                if len(data) > MAX_BODY_BYTES:
                    break
        finally:
            await response.aclose()
    except httpx.TimeoutException as err:
        raise ToolError(f"{method} {url}: timed out after {timeout_s:g} s ({type(err).__name__})") from None
    except httpx.ConnectError as err:
        what = "connection refused" if _refused(err) else f"cannot connect: {_one_line(_root(err))}"
        raise ToolError(f"{method} {url}: {what}") from None
    except httpx.TooManyRedirects:
        raise ToolError(f"{method} {url}: too many redirects") from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as err:
        raise ToolError(f"{method} {url}: {type(err).__name__}: {_one_line(err)}") from None
    elapsed_ms = round((time.monotonic() - started) * 1000, 2)

    truncated = len(data) > MAX_BODY_BYTES
    text, encoding = decode_body(bytes(data[:MAX_BODY_BYTES]), response.charset_encoding, complete=not truncated)
    return {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "url": str(response.url),
        "http_version": response.http_version,
        "headers": _headers(response.headers),
        "body": text,
        "body_encoding": encoding,
        "body_bytes": len(data),
        "truncated": truncated,
        "elapsed_ms": elapsed_ms,
    }


def decode_body(data: bytes, charset: str | None, complete: bool = True) -> tuple[str, str]:
    """``(text, "text")`` when ``data`` decodes in ``charset`` (default UTF-8), else ``(base64, "base64")``."""
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    try:
        # A multi-byte character cut by truncation is not a reason to fall back to base64.
        text = decoder.decode(data, final=complete)
        if "\x00" not in text:
            return text, "text"
    except UnicodeDecodeError:
        pass
    return base64.b64encode(data).decode("ascii"), "base64"


def _headers(headers: httpx.Headers) -> dict[str, str]:
    """Response headers, lower-case names; repeated headers joined with ', ' (Set-Cookie with '\\n')."""
    merged: dict[str, str] = {}
    for name, value in headers.multi_items():
        name = name.lower()
        if name in merged:
            merged[name] += ("\n" if name == "set-cookie" else ", ") + value
        else:
            merged[name] = value
    return merged


def _root(err: BaseException) -> BaseException:
    """The innermost cause: httpx wraps the OS error (refused, DNS) in generic messages."""
    seen = 0
    while (err.__cause__ or err.__context__) is not None and seen < 10:
        err = err.__cause__ or err.__context__
        seen += 1
    return err


def _refused(err: BaseException) -> bool:
    return isinstance(_root(err), ConnectionRefusedError) or "refused" in str(err).lower()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def mcp_http_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the generic HTTP-request MCP server on http://HOST:PORT/mcp (Streamable HTTP, stateful)."""
    build_server().run("streamable-http", host=host, port=port, streamable_http_path="/mcp")


if __name__ == "__main__":  # pragma: no cover
    typer.run(mcp_http_command)
