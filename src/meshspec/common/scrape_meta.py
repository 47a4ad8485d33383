"""Prometheus' discovery through the registry. Where an instance exports metrics is in its
registration's Meta: the deploy writes these keys (render.registrations) and the controller's
targets for Prometheus read them (runtime.proxy.scrape_targets), from meshspec's registrations
and from anyone's, a real Consul's included."""

from __future__ import annotations

PORT = "metrics-port"  # the port of the metrics endpoint, on the instance's address
PATH = "metrics-path"  # its path; absent: /metrics, Prometheus' default
DEFAULT_PATH = "/metrics"

#: Where the controller serves Prometheus' targets (http_sd) and prometheus.yml asks for them.
TARGETS_PATH = "/v1/prometheus/targets"
