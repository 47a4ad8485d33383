"""The mesh spec: models, the line-numbered loader, and the rules between fields."""

from meshspec.spec.loader import load_spec, parse_spec
from meshspec.spec.models import KINDS, MeshSpec, Service
from meshspec.spec.problems import Problem, SpecInvalid

__all__ = ["KINDS", "MeshSpec", "Problem", "Service", "SpecInvalid", "load_spec", "parse_spec"]
