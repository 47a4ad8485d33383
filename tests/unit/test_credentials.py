"""The backing services' credentials (Credentials in the spec): which files hold the password and
whose they are, how a prepare step gets it, what the probes log in with, and what a container
mounts. Pure: the shipped spec's plan, no server."""

from __future__ import annotations

from pathlib import Path

from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.render.containers import container_user, volumes
from meshspec.render.preparation import preparation
from meshspec.render.probes import probe
from meshspec.render.programs import launch
from meshspec.render.secrets import host_secret_files
from meshspec.runtime.services.jobs import with_password
from meshspec.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def shipped():
    return make_plan(load_spec(str(ROOT / "mesh_spec.yaml")), [Host("@local", "127.0.0.1")])


def files_of(plan, owned=True):
    return {f.path: f for f in host_secret_files(plan, "local", plan.instances, owned=owned)}


def test_each_backing_service_has_an_account_and_a_password_in_files_only():
    plan = shipped()
    files = files_of(plan)
    own = {s: files[str(plan.layout.credentials_file(s, s))] for s in ("postgresql", "rabbitmq", "mariadb")}
    assert own["postgresql"].text("pw") == "pw\n"  # initdb --pwfile reads the first line
    assert own["rabbitmq"].text("pw") == "default_user = meshspec\ndefault_pass = pw\n"
    assert "ALTER USER root@localhost IDENTIFIED BY 'pw';" in own["mariadb"].text("pw")
    # the server reads its own file: RabbitMQ at each boot (its user's); the others on stdin from root
    assert (own["postgresql"].owner, own["rabbitmq"].owner, own["mariadb"].owner) == (None, "rabbitmq", None)
    for service, user in (("postgresql", "postgres"), ("rabbitmq", "meshspec"), ("mariadb", "root")):
        probe_file = files[str(plan.layout.probe_credentials_file(service))]
        assert (probe_file.owner, probe_file.text("pw"), probe_file.name) == (None, f"{user}:pw\n", own[service].name)
    names = [f.name for f in own.values()]
    assert len(set(names)) == 3  # three passwords, none a token's
    assert not any(f.name in names for f in files.values() if "/consul/" in f.path)


def test_a_dependent_reads_its_own_copy_of_a_password_and_nothing_else():
    plan = shipped()
    files = files_of(plan)
    copy = lambda service, reader: files.get(str(plan.layout.credentials_file(service, reader)))  # noqa: E731
    assert copy("postgresql", "backend-api").owner == "meshspec-api"
    assert copy("rabbitmq", "backend-api").owner == "meshspec-api"
    assert copy("postgresql", "task-worker").owner == "meshspec-worker"
    assert copy("postgresql", "postgres-exporter").owner == "meshspec-exporter"
    assert copy("postgresql", "postgres-exporter").text("pw") == "pw\n"
    assert copy("rabbitmq", "postgres-exporter") is None  # it names no rabbitmq password
    # a copy in its reader's form: redis-exporter's password file maps its target's URI to the password
    redis = plan.instances_of("redis")[0]
    assert copy("redis", "redis-exporter").text("pw") == f'{{"redis://127.0.0.1:{redis.port}": "pw"}}\n'
    assert copy("redis", "redis-exporter").owner == "meshspec-redis-exporter"
    env = launch(plan, plan.instances_of("backend-api")[0]).env
    assert env["MESH_DATABASE_PASSWORD_FILE"] == str(plan.layout.credentials_file("postgresql", "backend-api"))
    assert env["MESH_DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:")
    assert env["MESH_AMQP_URL"].startswith("amqp://meshspec@127.0.0.1:")
    assert not any("guest" in value for value in env.values())


def test_a_server_s_own_file_names_the_address_of_the_host_it_is_on():
    """A host's checker and proxy reach a server at the host's address, which is no loopback
    client: MariaDB's root is made for that address too, Redis asks every client for its password."""
    plan = make_plan(load_spec(str(ROOT / "mesh_spec.yaml"), inventory=frozenset({"h1", "h2"})),
                     [Host("h1", "10.213.0.2"), Host("h2", "10.213.0.3")])
    files = {f.path: f for f in host_secret_files(plan, "h1", plan.instances_on("h1"))}
    mariadb = files[str(plan.layout.credentials_file("mariadb", "mariadb"))].text("pw")
    assert "CREATE USER root@'10.213.0.2' IDENTIFIED BY 'pw';" in mariadb and "{address}" not in mariadb
    assert files[str(plan.layout.credentials_file("redis", "redis"))].text("pw") == 'requirepass "pw"\n'


def test_a_prepare_step_gets_the_password_through_a_pipe_root_opens():
    plan = shipped()
    script = preparation(plan, plan.instances_of("postgresql")[0]).script()
    own = plan.layout.credentials_file("postgresql", "postgresql")
    assert f"cat {own} | runuser -u postgres -- sh -c 'cat | \"$@\"' sh sh -c " in script
    assert "--auth-host=scram-sha-256 --auth-local=peer --pwfile=/dev/stdin" in script
    assert "--auth=trust" not in script
    assert "trusts every login" in script  # a data dir made with trust is refused by name
    plain = preparation(plan, plan.instances_of("chromadb")[0]).script()
    assert "cat " not in plain and "|" not in plain


def test_the_login_probes_log_in_with_the_service_s_credentials():
    plan = shipped()
    for service in ("postgresql", "rabbitmq", "mariadb", "redis"):
        found = probe(plan, plan.instances_of(service)[0])
        assert found.credentials_file == str(plan.layout.probe_credentials_file(service))


def test_in_containers_the_files_are_root_s_mounted_and_read_by_root_only_where_the_program_reads_one():
    plan = shipped()
    assert all(f.owner is None for f in files_of(plan, owned=False).values())
    mounts = volumes(plan, plan.instances_of("postgres-exporter")[0])
    assert mounts[str(plan.layout.credentials_file("postgresql", "postgres-exporter"))] == "ro"
    assert str(plan.layout.credentials_file("postgresql", "postgresql")) in volumes(plan, plan.instances_of("postgresql")[0])
    assert container_user(plan, "postgres-exporter") is None  # reads its copy as it runs
    assert container_user(plan, "rabbitmq") is None  # reads its config file at each boot
    assert container_user(plan, "postgresql") == "postgres"  # only its prepare reads it, from root's pipe
    assert container_user(plan, "mariadb") == "mysql"


def test_a_url_gets_its_password_from_the_file(tmp_path):
    held = tmp_path / "pw"
    held.write_text("s3cret\n")
    assert with_password("amqp://meshspec@127.0.0.1:5672/", str(held)) == "amqp://meshspec:s3cret@127.0.0.1:5672/"
    assert with_password("postgresql://postgres@h:5/db", str(held)) == "postgresql://postgres:s3cret@h:5/db"
    assert with_password("amqp://guest:guest@h/", None) == "amqp://guest:guest@h/"
