"""Effective per-service settings: the service's own values over the mesh defaults."""

from __future__ import annotations

from pydantic import BaseModel

from meshspec.spec.models import HealthTiming, MeshSpec, Routing, Service


def overlay(base: BaseModel, over: BaseModel) -> BaseModel:
    """`over`'s explicitly given fields laid on `base`, recursively for nested models."""
    updates = {}
    for name in over.model_fields_set:
        mine, theirs = getattr(over, name), getattr(base, name)
        both_models = isinstance(mine, BaseModel) and type(mine) is type(theirs)
        updates[name] = overlay(theirs, mine) if both_models else mine
    return base.model_copy(update=updates)


def effective_routing(spec: MeshSpec, service: Service) -> Routing:
    return overlay(spec.defaults.routing, service.routing)


def effective_health_timing(spec: MeshSpec, service: Service) -> HealthTiming:
    given = {f: getattr(service.health, f) for f in HealthTiming.model_fields if getattr(service.health, f) is not None}
    return spec.defaults.health.model_copy(update=given)


def path_prefix(service: Service, routing: Routing) -> str:
    return routing.path_prefix or f"/svc/{service.name}"
