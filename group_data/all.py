# Defaults for every host; each can be overridden by the environment variable it names.
from meshspec import settings

mesh_spec = settings.spec_path()  # MESH_SPEC
mesh_runtime = settings.runtime()  # MESH_RUNTIME: process | docker
mesh_state_dir = settings.state_dir()  # MESH_STATE_DIR
mesh_cache_dir = settings.cache_dir()  # MESH_CACHE_DIR: installs, shared by every mesh of the host
mesh_port_offset = settings.port_offset()  # MESH_PORT_OFFSET
consul_http_addr = settings.consul_http_addr()  # CONSUL_HTTP_ADDR: a real Consul; unset = the embedded agent
