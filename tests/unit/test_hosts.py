import pytest

from meshspec.plan.hosts import Host, HostsError
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
    with pytest.raises(HostsError, match=r"hosts:2: expected 'name \[address\]'"):
        configured_hosts({"MESH_HOSTS_FILE": str(f)})


def test_hosts_whose_labels_collide_are_refused():
    with pytest.raises(HostsError, match="share an ID label"):
        configured_hosts({"MESH_HOSTS": "web.1,web-1"})
