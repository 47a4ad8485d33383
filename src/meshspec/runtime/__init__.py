"""What runs on a host for months: the agent, the proxy controller, the services, probes, the reaper.

Imports only meshspec.common and itself: a program started by supervisord or in a container pays
for nothing the deploy needs.
"""
