"""The proxy's edge: consumers' API keys (render.secrets) and the lines that ask for them (render.haproxy). Pure."""

from __future__ import annotations

from hashlib import sha256

from meshspec.render.haproxy import edge_lines, proxy_instance, proxy_paths, render_haproxy
from meshspec.render.secrets import consumer_key, consumers_map, edge_files, host_secret_files
from tests.unit.test_acl_tokens import shipped


def test_each_consumer_has_its_own_key_and_the_map_holds_only_their_hashes():
    plan = shipped()
    keys = {c: consumer_key("s3cret", c) for c in ("operator", "ci", "ide")}
    assert len(set(keys.values())) == 3 and all(len(k) == 64 for k in keys.values())
    assert consumer_key("other", "operator") != keys["operator"]  # another mesh (another management token)
    text = consumers_map("s3cret", tuple(keys))
    assert text.splitlines() == [f"{sha256(k.encode()).hexdigest()} {c}" for c, k in keys.items()]
    assert not any(k in text for k in keys.values())
    files = {f.path: f for f in edge_files(plan, proxy_instance(plan))}
    operator = files[str(plan.layout.consumer_key_file("operator"))]
    assert operator.owner is None and operator.text("s3cret") == consumer_key("s3cret", "operator") + "\n"
    assert files[proxy_paths(plan)["consumers"]].owner == plan.proxy_controller_user
    proxy_elsewhere = [i for i in plan.instances if i.service != plan.spec.proxy.service]
    assert proxy_paths(plan)["consumers"] not in {f.path for f in host_secret_files(plan, "local", proxy_elsewhere)}


def test_the_edge_asks_a_key_only_where_the_spec_declares_consumers():
    plan = shipped()
    lines = edge_lines(plan, proxy_instance(plan))
    assert any("req.hdr(x-api-key),sha2(256),hex,lower,map(" in line for line in lines)
    assert any(line.startswith("http-request deny deny_status 401") and "unless { ssl_fc }" in line for line in lines)
    assert "http-request del-header X-API-Key" in lines  # the key goes no further than the proxy
    open_plan = shipped()
    open_plan.spec.consumers.clear()
    assert edge_lines(open_plan, proxy_instance(open_plan)) == ["http-request del-header X-Mesh-Consumer"]
    assert "x-api-key" not in render_haproxy(open_plan)
