"""spec + hosts + settings -> the instances to run, their ports, addresses and state dirs: pure data."""

from meshspec.plan.hosts import LOCAL, LOOPBACK, Host
from meshspec.plan.instances import Instance, Plan, make_plan
from meshspec.plan.layout import Layout
from meshspec.plan.runtime import Runtime

__all__ = ["LOCAL", "LOOPBACK", "Host", "Instance", "Layout", "Plan", "Runtime", "make_plan"]
