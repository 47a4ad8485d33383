import pytest

from meshspec.plan.hosts import Host, HostsError, inventory_names
from meshspec.settings import configured_hosts


def test_default_is_local_on_loopback():
    assert configured_hosts({}) == [Host("@local", "127.0.0.1")]


def test_listed_hosts_carry_their_ssh_user_and_a_dns_safe_label():
    hosts = configured_hosts({"MESH_HOSTS": "web1,deploy@Web_2.example"})
    assert [(h.name, h.address, h.ssh_user, h.label) for h in hosts] == [
        ("web1", "web1", None, "web1"),
        ("Web_2.example", "Web_2.example", "deploy", "web-2-example"),
    ]


def test_hosts_file_takes_addresses_and_comments(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("# the mesh\nweb1 10.0.0.5\n\nweb2  # no address: its name\n")
    hosts = configured_hosts({"MESH_HOSTS_FILE": str(f)})
    assert [(h.name, h.address) for h in hosts] == [("web1", "10.0.0.5"), ("web2", "web2")]


def test_hosts_file_errors_name_the_line(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("web1\nweb2 a b\n")
    with pytest.raises(HostsError, match=r"hosts:2: expected 'name \[address\] \[groups=a,b\] \[ssh_...=value\]'"):
        configured_hosts({"MESH_HOSTS_FILE": str(f)})


def test_hosts_whose_labels_collide_are_refused():
    with pytest.raises(HostsError, match="share an ID label"):
        configured_hosts({"MESH_HOSTS": "web.1,web-1"})


def test_hosts_file_lines_may_name_groups(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("web1 10.0.0.5 groups=web,edge\ndb1 groups=db\n")
    hosts = configured_hosts({"MESH_HOSTS_FILE": str(f)})
    assert [(h.name, h.address, h.groups) for h in hosts] == [("web1", "10.0.0.5", ("web", "edge")),
                                                              ("db1", "db1", ("db",))]
    assert inventory_names(hosts) == {"web1", "db1", "web", "edge", "db"}


def test_a_bad_group_name_names_its_line(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("web1 groups=web,\n")
    with pytest.raises(HostsError, match=r"hosts:1: '' is no group name"):
        configured_hosts({"MESH_HOSTS_FILE": str(f)})


def test_a_line_may_say_how_pyinfra_connects(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("root@h1 10.213.0.2 ssh_hostname=10.213.0.2 ssh_key=/c/id groups=web\n")
    (host,) = configured_hosts({"MESH_HOSTS_FILE": str(f)})
    assert host.pyinfra_data == {"mesh_address": "10.213.0.2", "mesh_host_label": "h1", "mesh_groups": ["web"],
                                 "ssh_hostname": "10.213.0.2",
                                 "ssh_key": "/c/id", "ssh_user": "root"}
    f.write_text("h1 ssh_password=x\n")  # nothing but the listed keys
    with pytest.raises(HostsError, match="'ssh_password' is not one of groups, ssh_hostname"):
        configured_hosts({"MESH_HOSTS_FILE": str(f)})


def test_verify_reaches_a_host_with_the_connection_settings_pyinfra_gets(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("root@h1 10.213.0.2 ssh_hostname=10.213.0.2 ssh_port=2222 ssh_key=/c/id ssh_known_hosts_file=/c/kh"
                 " ssh_strict_host_key_checking=yes\nweb2\n@local\n")
    h1, web2, local = configured_hosts({"MESH_HOSTS_FILE": str(f)})
    assert h1.ssh_command() == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", "2222", "-i", "/c/id",
                                "-o", "UserKnownHostsFile=/c/kh", "-o", "StrictHostKeyChecking=yes", "root@10.213.0.2",
                                "--"]
    assert web2.ssh_command() == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "web2", "--"]
    assert web2.ssh_command("-N", "-L", "127.0.0.1:1:10.0.0.2:2") == [  # options before the host (an ssh -L)
        "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-N", "-L", "127.0.0.1:1:10.0.0.2:2", "web2", "--"]
    assert local.ssh_command() == [] and local.is_local and not h1.is_local
