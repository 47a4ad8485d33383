"""Converge every host of the inventory to the spec (mesh_spec.yaml, or MESH_SPEC).

    pyinfra -y inventory deploys/mesh.py        (or: make deploy)
"""

from pyinfra import host
from pyinfra.facts.files import FileContents

from meshspec.deploy import BIN_DIR, this_host
from meshspec.facts.shared import SharedFact
from meshspec.facts.stamps import Stamps
from meshspec.installs import STAMP
from meshspec.ops import consul, health, instances, packages, supervisor

mesh = this_host(host)  # a bad spec stops the run here, before any host is changed
ctl, conf = f"{BIN_DIR}/supervisorctl", str(mesh.layout.supervisor_conf)
stamps = SharedFact(Stamps, root=mesh.install_root, stamp=STAMP)
token = SharedFact(FileContents, path=mesh.token_path)

packages.debian(name="Debian packages", packages=mesh.debian_packages)
for recipe in mesh.recipes:
    packages.isolated(name=f"Install {recipe.service}", stamps=stamps, recipe=recipe)
consul.token(name="Consul token", path=mesh.token_path, value=mesh.given_token)
instances.prepared(name="Instance directories", root=str(mesh.layout.root / "instances"), preparations=mesh.preparations)
instances.files(name="Rendered files", wanted=mesh.files)
supervisor.daemon(name="supervisord", layout=mesh.layout, bin_dir=BIN_DIR)
supervisor.programs(name="Programs", layout=mesh.layout, bin_dir=BIN_DIR, wanted=mesh.programs)
packages.prune_isolated(name="Prune installs", root=mesh.install_root, stamps=stamps, keep=[r.service for r in mesh.recipes])
consul.answering(name="Consul answers", registry=mesh.registry, token=token)
consul.services(name="Registrations", registry=mesh.registry, token=token, wanted=mesh.registrations)
consul.prune(name="Prune registrations", registry=mesh.registry, token=token,
             mesh=mesh.plan.spec.mesh.name, host_label=mesh.host_label, keep=mesh.ids)
health.passing(name="Health", registry=mesh.registry, token=token, ids=mesh.ids)
health.summary(name="Summary", registry=mesh.registry, token=token, ids=mesh.ids, ctl=ctl, conf=conf)
