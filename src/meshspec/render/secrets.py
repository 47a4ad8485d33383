"""The secret files a host keeps (each 0600): every program's Consul token, and the stats page's
credentials on the host that runs the proxy.

Pure: which files, and each one's text around its secret. The secrets are not here: the deploy
derives each from the management token by its `name` (converge.ops.consul.derived_ids), so a lost
file is rewritten the same, no second secret is stored, and one secret tells nothing of another.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshspec.plan import Instance, Plan
from meshspec.plan.layout import STATS_CREDENTIALS, STATS_USERS
from meshspec.render.acl import host_tokens, policy_name
from meshspec.render.haproxy import STATS_USER, stats_users

SECRET = "{secret}"


@dataclass(frozen=True)
class SecretFile:
    path: str
    name: str  # what its secret is derived from: files of one name hold the same secret
    form: str = SECRET + "\n"  # the file's text, SECRET where the secret goes

    def text(self, secret: str) -> str:
        return self.form.replace(SECRET, secret)


def host_secret_files(plan: Plan, host_label: str, instances: list[Instance]) -> list[SecretFile]:
    """The secret files of a host: its programs' tokens, and the stats page's two files where the
    proxy's instance runs (HAProxy's userlist, and `user:password` for curl -u and the probe)."""
    files = [SecretFile(t.path, t.name) for t in host_tokens(plan, host_label, instances)]
    proxy = plan.spec.proxy.service
    if proxy is not None and plan.instances_of(proxy)[0] in instances:
        files += stats_files(plan)
    return files


def stats_files(plan: Plan) -> list[SecretFile]:
    """HAProxy's userlist of the stats page, and the same password as `user:password`."""
    name = policy_name(plan, "haproxy-stats")
    return [SecretFile(plan.proxy_file(STATS_USERS), name, stats_users(SECRET)),
            SecretFile(plan.proxy_file(STATS_CREDENTIALS), name, f"{STATS_USER}:{SECRET}\n")]
