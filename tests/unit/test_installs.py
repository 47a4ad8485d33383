"""Isolated installs: the host script in the shared install cache (run here with sh, in tmp_path),
the progress lines a deploy prints, and the operation's runner (a gevent pool) over a stand-in host."""

from __future__ import annotations

import shlex
import subprocess
import tarfile
from pathlib import Path

import gevent
import gevent.subprocess
import pytest
from pyinfra.api.command import StringCommand
from pyinfra.connectors.util import CommandOutput, OutputLine

from meshspec import settings
from meshspec.render import installs
from meshspec.render.installs import STAMP, recipe
from meshspec.spec.models import Install


def after_only(tmp_path: Path, service: str, *commands: str) -> installs.Recipe:
    """A recipe of `after` steps only (no download), each a shell command run in the install dir."""
    return recipe(service, str(tmp_path / "cache" / f"{service}-k"), Install(after=[["sh", "-c", c] for c in commands]))


def run(r: installs.Recipe) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", r.host_script()], capture_output=True, text=True, timeout=60)


# --- the host script ------------------------------------------------------------------------------

def test_an_install_is_built_stamped_last_and_reports_its_size(tmp_path):
    r = after_only(tmp_path, "svc", "head -c 2097152 /dev/zero > blob")
    done = run(r)
    assert done.returncode == 0, done.stderr
    assert (Path(r.install_dir) / STAMP).read_text().strip() == r.hash
    built_meanwhile, kib = installs.installed(done.stdout.splitlines())
    assert not built_meanwhile and kib >= 2048
    assert Path(r.log).exists()  # the install's output, beside its directory


def test_a_finished_install_is_not_built_again(tmp_path):
    counter = tmp_path / "runs"
    r = after_only(tmp_path, "svc", f"echo run >> {counter}")
    assert run(r).returncode == 0
    again = run(r)
    assert again.returncode == 0 and installs.installed(again.stdout.splitlines())[0]
    assert counter.read_text().count("run") == 1


def test_an_interrupted_install_is_redone_from_scratch(tmp_path):
    r = after_only(tmp_path, "svc", "test ! -e half-written && echo ok > done")
    Path(r.install_dir).mkdir(parents=True)
    (Path(r.install_dir) / "half-written").write_text("no stamp: an install killed midway")
    assert run(r).returncode == 0
    assert (Path(r.install_dir) / "done").exists() and not (Path(r.install_dir) / "half-written").exists()


def test_a_failed_install_shows_the_end_of_its_log_and_leaves_no_stamp(tmp_path):
    r = after_only(tmp_path, "svc", "seq 1 100; echo 'the real error' >&2; exit 3")
    failed = run(r)
    assert failed.returncode != 0
    lines = failed.stdout.splitlines()
    assert lines[-1] == "the real error" and len(lines) == installs.LOG_TAIL and lines[0] == "62"
    assert not (Path(r.install_dir) / STAMP).exists()


def test_two_deploys_never_build_one_directory_at_once(tmp_path):
    """The second waits on the lock, then finds the install built."""
    counter = tmp_path / "runs"
    r = after_only(tmp_path, "svc", f"echo start >> {counter}; sleep 0.5; echo end >> {counter}")
    both = [subprocess.Popen(["sh", "-c", r.host_script()], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0]
    assert counter.read_text().split() == ["start", "end"]
    assert sorted(installs.installed(o.splitlines())[0] for o in outputs) == [False, True]


def test_the_image_recipe_has_no_lock_nor_cache():
    """The docker runtime's images run `script` as before: only host installs use the cache's lock."""
    r = recipe("svc", "/opt/meshspec/install/svc", Install(pip=["mcp-proxy==0.13.0"]))
    assert "flock" not in r.script() and "flock" in r.host_script()
    assert shlex.quote(r.script()) in r.host_script()


def test_the_stamps_fact_key_is_the_directory_name():
    assert recipe("svc", "/var/cache/meshspec/svc-0123abcd", Install(pip=["x==1"])).name == "svc-0123abcd"


# --- progress lines -------------------------------------------------------------------------------

def test_progress_lines_read_well_in_a_ci_log():
    assert installs.started_line("ruv-swarm") == "install ruv-swarm: started"
    assert installs.done_line("ruv-swarm", 48.7, 312 * 1024) == "install ruv-swarm: done in 48 s, 312 MB"
    assert installs.done_line("claude-flow", 221, 348 * 1024) == "install claude-flow: done in 3m41s, 348 MB"
    assert installs.done_line("x", 0.2, 1024, built_meanwhile=True) == "install x: built meanwhile by another deploy, 1 MB"
    assert installs.progress_line(5, 19, {"ruv-swarm": 48, "chromadb": 130, "embeddings": 100}) == (
        "installs: 5/19 done; running chromadb (2m10s), embeddings (1m40s), ruv-swarm (0m48s)")
    assert installs.progress_line(5, 19, {"a": 1}, failed=1) == "installs: 5/19 done, 1 failed; running a (0m01s)"
    assert installs.failed_line("x", 3, "/c/x-k.log") == "install x: FAILED after 3 s; the end of /c/x-k.log:"
    assert installs.summary_line(19, 19, 612) == "installs: 19/19 done in 10m12s"
    assert installs.summary_line(5, 19, 70, ("x",), 13) == "installs: 5/19 done in 1m10s; failed: x; 13 not started"
    assert "\x1b" not in installs.progress_line(1, 2, {"a": 1})


def test_output_without_a_size_line_reads_as_size_unknown():
    assert installs.installed(["npm warn something"]) == (False, None)
    assert installs.megabytes(None) == "size unknown"


def test_the_cache_dir_setting():
    assert settings.cache_dir({}) == "/var/cache/meshspec" == settings.DEFAULT_CACHE_DIR
    assert settings.cache_dir({"MESH_CACHE_DIR": "/srv/cache"}) == "/srv/cache"


# --- the operation's runner -----------------------------------------------------------------------

class Host:
    """pyinfra's host as the runner uses it: a name and run_shell_command (here: sh, cooperatively)."""

    name = "@local"

    def __init__(self):
        self.running = self.most = 0

    def run_shell_command(self, command: StringCommand):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            proc = gevent.subprocess.run(command.get_raw_value(), shell=True, capture_output=True, text=True)
        finally:
            self.running -= 1
        return proc.returncode == 0, CommandOutput([OutputLine("stdout", line) for line in proc.stdout.splitlines()])


class State:
    inventory = ["@local"]


@pytest.fixture
def ops():
    from meshspec.converge.ops import packages

    return packages


def test_installs_run_jobs_at_a_time_and_say_what_runs(tmp_path, capsys, ops):
    recipes = [after_only(tmp_path, f"s{n}", "sleep 0.4") for n in range(4)]
    host = Host()
    assert ops._install(State(), host, recipes, 2, every=0.15) is True
    out = capsys.readouterr().out.splitlines()
    assert host.most == 2
    assert "    install s0: started" in out and any(line.startswith("    install s3: done in 0 s, ") for line in out)
    assert any(line.startswith("    installs: 0/4 done; running s0 (0m00s), s1 (0m00s)") for line in out)
    assert out[-1].startswith("    installs: 4/4 done in ")
    assert all((Path(r.install_dir) / STAMP).exists() for r in recipes)


def test_a_failed_install_fails_the_operation_and_starts_no_other(tmp_path, capsys, ops):
    recipes = [after_only(tmp_path, "bad", "echo 'no such package' >&2; exit 1"), after_only(tmp_path, "slow", "sleep 0.3"),
               after_only(tmp_path, "later", "true")]
    assert ops._install(State(), Host(), recipes, 2, every=10) is False
    out = capsys.readouterr().out
    assert "install bad: FAILED after 0 s; the end of " in out and "      no such package" in out
    assert "install slow: done" in out  # it was running: it finishes
    assert "install later" not in out
    assert out.splitlines()[-1].endswith("; failed: bad; 1 not started")


def test_meshspec_s_own_install_is_built_from_the_uploaded_archive_named_by_its_digest(tmp_path):
    """The host needs no checkout: the source archive the deploy uploads is unpacked in the install,
    installed from there and removed, the archive too, even when the install fails; another digest
    of the same tree is another install."""
    source = tmp_path / "checkout"
    (source / "src" / "meshspec").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "src/meshspec/__init__.py"):
        (source / name).write_text(name)
    archive = tmp_path / "cache" / "meshspec-d1.source-1.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=".")
    r = installs.meshspec_recipe(str(tmp_path / "cache" / "meshspec-d1"), "d1")
    unpack_only = r.script(str(archive)).split(f"{installs.VENV_PYTHON} -m venv")[0] + "true"
    assert subprocess.run(["sh", "-c", unpack_only], capture_output=True, timeout=30).returncode == 0
    unpacked = Path(r.install_dir) / "source"
    assert (unpacked / "src/meshspec/__init__.py").read_text() == "src/meshspec/__init__.py"
    assert r.pip == (str(unpacked),) and r.script(str(archive)).rstrip().count(f"rm -rf {unpacked}") == 1
    assert r.hash != installs.meshspec_recipe(r.install_dir, "d2").hash
    failing = installs.Recipe("meshspec", r.install_dir, ("/nowhere/to/install/from",), (), source_digest="d1")
    assert subprocess.run(["sh", "-c", failing.host_script(str(archive))], capture_output=True, timeout=120).returncode != 0
    assert not archive.exists()  # removed, though the install failed
