"""The BDD acceptance suites: every scenario of features/*.feature, with the steps of tests/bdd/steps_*.py.

Run against the mesh the environment describes:  pytest tests/bdd --mesh=running
Deploy the shipped spec in isolation (offset 20000), run, tear down:  pytest tests/bdd
"""

from pytest_bdd import scenarios

from tests.bdd.steps_containers import *  # noqa: F401,F403
from tests.bdd.steps_dashboard import *  # noqa: F401,F403
from tests.bdd.steps_health import *  # noqa: F401,F403
from tests.bdd.steps_hosts import *  # noqa: F401,F403
from tests.bdd.steps_mcp import *  # noqa: F401,F403
from tests.bdd.steps_mesh import *  # noqa: F401,F403
from tests.bdd.steps_proxy import *  # noqa: F401,F403
from tests.bdd.steps_registry import *  # noqa: F401,F403
from tests.bdd.steps_tracing import *  # noqa: F401,F403
from tests.bdd.steps_workloads import *  # noqa: F401,F403

scenarios("../../features")
