"""Where Alertmanager sends the mesh's alerts, asked of Alertmanager's own router (`amtool config
routes test` on the rendered alertmanager.yml), and what backend-api's webhook stores of one."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.render.files import rendered_files
from meshspec.runtime.services.alert_store import Notification, rows
from meshspec.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
amtool = pytest.mark.skipif(not shutil.which("amtool"), reason="amtool (Debian package prometheus-alertmanager) is not installed")


@pytest.fixture
def alertmanager_yml(tmp_path):
    plan = make_plan(load_spec(REPO / "mesh_spec.yaml"), [Host("@local", "127.0.0.1")], port_offset=20000,
                     state_dir=str(tmp_path))
    ((path, text),) = rendered_files(plan, plan.instances_of("alertmanager")[0])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return plan, path, yaml.safe_load(text)


def receiver_of(config: str, *labels: str) -> str:
    result = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={config}", *labels],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


@amtool
def test_alertmanager_accepts_its_config(alertmanager_yml):
    _, path, _ = alertmanager_yml
    result = subprocess.run(["amtool", "check-config", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@amtool
def test_alerts_go_by_severity_to_the_alert_store_and_alerts_without_one_to_nobody(alertmanager_yml):
    _, path, _ = alertmanager_yml
    assert receiver_of(path, "alertname=MeshInstanceDown", "severity=critical") == "backend-api-critical"
    assert receiver_of(path, "alertname=MeshServerEjected", "severity=warning") == "backend-api-warning"
    assert receiver_of(path, "alertname=MeshspecProbe", "nonce=abc") == "nobody"


def test_the_webhook_is_backend_apis_through_the_edge_with_the_key_alertmanager_holds(alertmanager_yml):
    plan, _, config = alertmanager_yml
    proxy = plan.instances_of("mesh-proxy")[0]
    for receiver in config["receivers"][1:]:
        (hook,) = receiver["webhook_configs"]
        assert hook["url"] == f"http://127.0.0.1:{proxy.port}/svc/backend-api/api/v1/mesh/alerts/webhook"
        assert hook["http_config"]["authorization"] == {"type": "Bearer",
            "credentials_file": str(plan.layout.consumer_key_file("alert-webhook"))}
        assert hook["send_resolved"] is True


def test_a_notification_stores_each_alert_once_with_its_end_only_when_it_ended():
    notification = Notification.model_validate({"version": "4", "receiver": "backend-api-critical", "alerts": [
        {"status": "firing", "labels": {"alertname": "MeshInstanceDown", "severity": "critical", "instance_id": "x-0"},
         "annotations": {"summary": "x"}, "startsAt": "2026-12-05T20:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "fingerprint": "f1"},
        {"status": "resolved", "labels": {"alertname": "MeshServerEjected", "severity": "warning"},
         "startsAt": "2026-12-05T19:00:00Z", "endsAt": "2026-12-05T19:05:00Z", "fingerprint": "f2"}]})
    firing, resolved = rows(notification)
    assert firing[:5] == ("f1", datetime(2026, 12, 5, 20, tzinfo=timezone.utc), "MeshInstanceDown", "critical", "firing")
    assert firing[7] is None and firing[8] == "backend-api-critical"
    assert resolved[4] == "resolved" and resolved[7] == datetime(2026, 12, 5, 19, 5, tzinfo=timezone.utc)
