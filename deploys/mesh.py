"""Converge every host of the inventory to the spec (mesh_spec.yaml, or MESH_SPEC).

    pyinfra -y inventory deploys/mesh.py        (or: make deploy)

MESH_RUNTIME picks what runs the instances: supervisord (process, the default) or one Docker
container each (docker). Switching converges: the other runtime's programs or containers go.
"""

from pyinfra import host, inventory
from pyinfra.facts.files import FileContents

from meshspec.converge.facts import snapshot
from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.facts.stamps import Stamps
from meshspec.converge.host import this_host
from meshspec.converge.images import image_plan
from meshspec.converge.ops import consul, docker, health, instances, packages, supervisor, tls
from meshspec.render.installs import STAMP

mesh = this_host(host)  # a bad spec stops the run here, before any host is changed
snapshot.declare(mesh.facts)  # read in one command by the first operation that asks
stamps = SharedFact(Stamps, root=mesh.cache_dir, stamp=STAMP)
# The management token is kept on the registry's host alone; every host's secrets derive from it.
token = SharedFact(FileContents, on=inventory.get_host(mesh.registry_host), path=mesh.token_path)
in_containers = mesh.runtime.in_containers
built = image_plan(mesh) if in_containers else None  # reads this host's Node.js and meshspec's source

packages.debian(name="Debian packages", packages=mesh.debian_packages)
if in_containers:
    docker.running_engine(name="Docker engine")
    docker.images(name="Images", base=built.base, layers=built.layers)
else:
    docker.containers(name="No containers (runtime: process)", wanted=[], owner=mesh.owner)
    packages.isolated(name="Installs", stamps=stamps, recipes=mesh.recipes)
    instances.users(name="System users", names=mesh.users)  # in the docker runtime, the images hold them
if mesh.keeps_registry:
    consul.token(name="Consul token", path=mesh.token_path, value=mesh.given_token, owner=mesh.token_owner)
consul.secret_files(name="Secret files", token=token, wanted=mesh.secret_files)
instances.prepared(name="Instance directories", root=str(mesh.layout.root / "instances"), preparations=mesh.preparations,
                   containers=built.containers_by_instance if in_containers else None)
instances.files(name="Rendered files", wanted=mesh.files)
tls.proxy_certificate(name="Proxy certificate", token=token, wanted=mesh.proxy_certificate)
# supervisord runs the host's checker in both runtimes, and the instances in the process runtime.
# Only now: a switch from the process runtime keeps serving while the images build.
supervisor.daemon(name="supervisord", layout=mesh.layout, bin_dir=mesh.bin_dir)
supervisor.programs(name="Programs", layout=mesh.layout, bin_dir=mesh.bin_dir, wanted=mesh.programs)
if in_containers:
    docker.containers(name="Containers", wanted=built.containers, owner=mesh.owner)
# No "Prune installs": installs live in the host's install cache, shared by every mesh of the host
# (a test mesh beside yours), named by their recipe; an entry this spec no longer names may be
# what another mesh runs. One mesh must not prune it: `make purge` empties the cache.
consul.answering(name="Consul answers", registry=mesh.registry, token=token)
if mesh.keeps_registry:  # the mesh's, put once: from each host they would race each other
    consul.acl_tokens(name="Program tokens in Consul", registry=mesh.registry, token=token, prefix=mesh.token_prefix,
                      wanted=mesh.mesh_tokens)
    consul.intentions(name="Intentions", registry=mesh.registry, token=token, prefix=mesh.token_prefix,
                      wanted=mesh.intentions)
consul.services(name="Registrations", registry=mesh.registry, token=token, wanted=mesh.registrations)
consul.prune(name="Prune registrations", registry=mesh.registry, token=token,
             mesh=mesh.plan.spec.mesh.name, host_label=mesh.host_label, keep=mesh.ids)
health.passing(name="Health", registry=mesh.registry, token=token, ids=mesh.ids, runtime=mesh.runtime,
               supervisor=str(mesh.layout.supervisor_socket), owner=mesh.owner, settle=mesh.settle)
