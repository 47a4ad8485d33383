"""Chaos experiments against a running mesh: Chaos Toolkit (chaostoolkit-lib) runs experiments
declared as data in `chaos/` (steady-state hypothesis, method, rollbacks); this package is their
extension (the actions and probes the experiments name as Python providers) and `meshspec chaos
run`, which runs them and renders what happened (report.py).

One experiment at a time (`run.py`): the load (Locust, a subprocess, through the proxy's edge), the
watcher (HAProxy's server states, polled) and the fault's window are recorded in the experiment's
run directory, which the probes judge and the report draws.
"""
