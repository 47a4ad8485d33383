"""Configuration rendered from the plan, checked by the real tools where they are installed."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.render.files import RENDERERS, rendered_files
from meshspec.spec import load_spec
from meshspec.spec.models import CONFIG_NAMES

REPO = Path(__file__).resolve().parents[2]


def test_every_config_name_the_spec_accepts_has_a_renderer():
    assert set(CONFIG_NAMES) == set(RENDERERS)


@pytest.fixture
def prometheus_files(tmp_path):
    plan = make_plan(load_spec(REPO / "mesh_spec.yaml"), [Host("@local", "127.0.0.1")], port_offset=20000, state_dir=str(tmp_path))
    files = rendered_files(plan, plan.instances_of("prometheus")[0])
    # the token file the deploy writes before Prometheus starts (promtool checks that it exists)
    token = Path(plan.layout.service_token_file("prometheus"))
    for path, text in [*files, (str(token), "a-token\n")]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return plan, dict(files)


def test_prometheus_finds_its_targets_at_the_controller_with_its_own_token(prometheus_files):
    plan, files = prometheus_files
    config = yaml.safe_load(next(t for p, t in files.items() if p.endswith("prometheus.yml")))
    mesh, registry = config["scrape_configs"]
    targets = f"http://127.0.0.1:{plan.instances_of('mesh-controller')[0].port}/v1/prometheus/targets"
    token = {"type": "Bearer", "credentials_file": str(plan.layout.service_token_file("prometheus"))}
    assert mesh["http_sd_configs"] == [{"url": targets, "refresh_interval": "10s", "authorization": token}]
    # the token goes to the registry's agent alone (its metrics ask agent:read), never to an exporter
    assert "authorization" not in mesh
    assert mesh["relabel_configs"] == [{"source_labels": ["job"], "regex": "consul", "action": "drop"}]
    assert registry["http_sd_configs"][0]["url"] == f"{targets}?service=consul"
    assert registry["authorization"] == token


def test_with_several_hosts_prometheus_scrapes_through_its_host_s_proxy(prometheus_files):
    """Its scrapes go out through its own host's proxy's egress listener (another host's targets
    over mTLS); on one host, straight to the targets."""
    one, files = prometheus_files
    assert all("proxy_url" not in job for job in yaml.safe_load(files[next(p for p in files if p.endswith(
        "prometheus.yml"))])["scrape_configs"])
    hosts = [Host(f"h{n}", f"10.213.0.{n + 1}") for n in (1, 2, 3)]
    plan = make_plan(load_spec(REPO / "mesh_spec.yaml"), hosts)
    prometheus = plan.instances_of("prometheus")[0]
    text = next(t for p, t in rendered_files(plan, prometheus) if p.endswith("prometheus.yml"))
    egress = plan.instances_of("mesh-proxy")[0].ports["egress"]
    assert {job.get("proxy_url") for job in yaml.safe_load(text)["scrape_configs"]} == {f"http://127.0.0.1:{egress}"}


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) is not installed")
def test_promtool_accepts_the_rendered_config_and_rules(prometheus_files):
    _, files = prometheus_files
    config = next(p for p in files if p.endswith("prometheus.yml"))
    result = subprocess.run(["promtool", "check", "config", config], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
