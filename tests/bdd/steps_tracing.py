"""Steps of traces across the mesh: a request or a job sent with a sampled traceparent of the
test's own, then its trace read back from the trace store (Phoenix's REST API), span by span, each
naming the instance that made it."""

from __future__ import annotations

import secrets
import time

import httpx
from pytest_bdd import parsers, then, when

from meshspec.verify.run import edge_headers
from tests.bdd.mesh_target import McpSession, wait_for

HTTP = httpx.Client(timeout=30, trust_env=False)


def _traceparent(world) -> dict[str, str]:
    """A sampled trace context whose root is the test itself (its span is never exported)."""
    world.counters["trace_id"], world.counters["root_span"] = secrets.token_hex(16), secrets.token_hex(8)
    return {"traceparent": f"00-{world.counters['trace_id']}-{world.counters['root_span']}-01"}


def _backend_api(world, path: str) -> str:
    return f"{world.target.proxy_url}/svc/backend-api/api/v1/mesh/{path}"


@when(parsers.parse('I ask backend-api\'s relay for a search of "{query}" at semantic-search, with a sampled trace'))
def _(world, query):
    relayed = {"service": "semantic-search", "method": "POST", "path": "/search", "body": {"query": query, "k": 1}}
    answer = HTTP.post(_backend_api(world, "proxy"), json=relayed,
                       headers={**edge_headers(world.target.plan), **_traceparent(world)})
    assert answer.status_code == 200, f"HTTP {answer.status_code}: {answer.text[:300]}"
    assert answer.json()["status"] == 200, answer.text[:300]


@when('I enqueue a sha256 job at backend-api through the proxy, with a sampled trace')
def _(world):
    answer = HTTP.post(_backend_api(world, "enqueue"), json={"kind": "sha256", "payload": {"data": "traced"}},
                       headers={**edge_headers(world.target.plan), **_traceparent(world)})
    assert answer.status_code in (200, 201, 202), answer.text
    job_id, deadline = answer.json()["id"], time.monotonic() + 30
    while HTTP.get(_backend_api(world, f"results/{job_id}"), headers=edge_headers(world.target.plan)).json()[
            "status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} not done within 30 s"
        time.sleep(0.2)


def _spans(world) -> list[dict]:
    store = world.target.instances_of(world.target.plan.spec.tracing.store)[0]
    answer = HTTP.get(f"http://{store.address}:{store.port}/v1/projects/default/spans",
                      params={"trace_id": world.counters["trace_id"], "limit": 1000})
    assert answer.status_code == 200, f"{world.target.plan.spec.tracing.store}: HTTP {answer.status_code}"
    return answer.json()["data"]


@then(parsers.parse("within {seconds:d} s the trace store holds one trace with spans of {services}"))
def _(world, seconds, services):
    wanted = {s.strip() for s in services.replace(" and ", ",").split(",")}
    root = world.counters["root_span"]

    def orphans(spans: list[dict]) -> list[str]:
        """One trace: every span hangs off the test's root or another span of the trace."""
        ids = {s["context"]["span_id"] for s in spans} | {root}
        return [s["name"] for s in spans if s["parent_id"] not in ids]

    # Each process exports its spans in batches of its own, so a child may be stored before its
    # parent: wait for the whole trace, then judge it.
    spans = wait_for(lambda: (found := _spans(world)) and wanted <= {s["attributes"].get("service.name")
                                                                   for s in found} and not orphans(found) and found,
                     seconds, interval=1)
    spans = spans or _spans(world)
    assert wanted <= {s["attributes"].get("service.name") for s in spans}, (
        f"no spans of {sorted(wanted)} in trace {world.counters['trace_id']} within {seconds} s; "
        f"found {sorted({s['attributes'].get('service.instance.id') for s in spans})}")
    assert not orphans(spans), f"spans whose parent is in no trace of the request after {seconds} s: {orphans(spans)}"
    instances = sorted({s["attributes"]["service.instance.id"] for s in spans})
    print(f"trace {world.counters['trace_id']}: {len(spans)} spans from {len(instances)} processes: "
          + ", ".join(instances))


@when(parsers.parse('I call "{tool}" through mcp-gateway with a sampled trace in the call\'s _meta'))
def _(world, tool):
    """MCP carries trace context in a request's `params._meta` (traceparent), as the MCP SDK does."""
    session = McpSession(f"{world.target.proxy_url}/mcp/mcp-gateway",
                         httpx.Client(trust_env=False, timeout=30, headers=edge_headers(world.target.plan)))
    session.open()
    meta = {"traceparent": _traceparent(world)["traceparent"]}
    result = session.request("tools/call", {"name": tool, "arguments": {}, "_meta": meta})
    session.close()
    assert not result.get("isError"), result
