"""Remove everything deploys/mesh.py created on each host, and nothing else.

    pyinfra -y inventory deploys/teardown.py    (or: make down)

Registrations are deregistered, the mesh's containers removed (when a Docker engine answers),
supervisord and its programs stopped, and the state directories meshspec owns removed. Images
stay, like packages: `docker image prune` removes the unused ones. Debian packages stay: they may predate the mesh or serve
other software. Installs stay too: they live in the host's install cache (MESH_CACHE_DIR), which
every mesh of the host shares; `make purge` (this deploy with `--data mesh_purge=true`) also
removes that cache, on every host.
"""

from pyinfra import host, inventory
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.host import this_host
from meshspec.converge.ops import consul, docker, supervisor
from meshspec.plan.layout import FORMER, OWNED

mesh = this_host(host)

consul.prune(name="Deregister", registry=mesh.registry, token=SharedFact(FileContents, on=inventory.get_host(mesh.registry_host), path=mesh.token_path),
             mesh=mesh.plan.spec.mesh.name, host_label=mesh.host_label, keep=[])
docker.containers(name="Remove containers", wanted=[], owner=mesh.owner)
supervisor.stopped(name="Stop supervisord and programs", layout=mesh.layout, bin_dir=mesh.bin_dir)
supervisor.no_leftovers(name="No process left over", layout=mesh.layout)
for part in (*OWNED, *FORMER):
    files.directory(name=f"Remove {mesh.layout.root / part}", path=str(mesh.layout.root / part), present=False)
if host.data.get("mesh_purge") is True:  # make purge; other meshes of the host lose their installs too
    files.directory(name=f"Remove the install cache {mesh.cache_dir}", path=mesh.cache_dir, present=False)
