"""Converge every host of the inventory to the spec (mesh_spec.yaml, or MESH_SPEC).

    pyinfra -y inventory deploys/mesh.py        (or: make deploy)
"""

from pyinfra import host

from meshspec.deploy import BIN_DIR, this_host
from meshspec.ops import consul, health, instances, packages, supervisor

mesh = this_host(host)  # a bad spec stops the run here, before any host is changed
ctl, conf = f"{BIN_DIR}/supervisorctl", str(mesh.layout.supervisor_conf)

packages.debian(name="Debian packages", packages=mesh.debian_packages)
for recipe in mesh.recipes:
    packages.isolated(name=f"Install {recipe.service}", root=mesh.install_root, recipe=recipe)
consul.token(name="Consul token", path=mesh.token_path, value=mesh.given_token)
instances.prepared(name="Instance directories", root=str(mesh.layout.root / "instances"), preparations=mesh.preparations)
instances.files(name="Rendered files", wanted=mesh.files)
supervisor.daemon(name="supervisord", layout=mesh.layout, bin_dir=BIN_DIR)
supervisor.programs(name="Programs", layout=mesh.layout, bin_dir=BIN_DIR, wanted=mesh.programs)
packages.prune_isolated(name="Prune installs", root=mesh.install_root, keep=[r.service for r in mesh.recipes])
consul.answering(name="Consul answers", registry=mesh.registry, token_path=mesh.token_path)
consul.services(name="Registrations", registry=mesh.registry, token_path=mesh.token_path, wanted=mesh.registrations)
consul.prune(name="Prune registrations", registry=mesh.registry, token_path=mesh.token_path,
             mesh=mesh.plan.spec.mesh.name, host_label=mesh.host_label, keep=mesh.ids)
health.passing(name="Health", registry=mesh.registry, token_path=mesh.token_path, ids=mesh.ids)
health.summary(name="Summary", registry=mesh.registry, token_path=mesh.token_path, ids=mesh.ids, ctl=ctl, conf=conf)
