"""Where backend-api takes Alertmanager's notifications: the route it serves
(runtime/services/backend_api.py) and the URL Alertmanager's config names (render/monitoring.py)."""

from __future__ import annotations

PATH = "/api/v1/mesh/alerts/webhook"
