"""facts.snapshot.Batch: several facts read with one command, each answered as pyinfra would
answer it alone. The command runs in a real `sh` here, as pyinfra runs it on a host."""

from __future__ import annotations

import hashlib
import subprocess

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError
from pyinfra.facts.files import FileContents

from meshspec.converge.facts.files import FileDigests, FileModes, MissingDirectories
from meshspec.converge.facts.snapshot import Batch, _narrowed, _narrower
from meshspec.converge.facts.stamps import Stamps


class Failing(FactBase):
    default = dict

    def command(self) -> str:
        return "echo half-written; exit 3"

    def process(self, output):
        raise AssertionError("a failed command's output is not processed")


class Unterminated(FactBase):
    def command(self) -> str:
        return "printf 'one\\ntwo'"

    def process(self, output):
        return output


def read(facts):
    batch = Batch()
    command = batch.command(facts=tuple((cls, tuple(sorted(kwargs.items()))) for cls, kwargs in facts))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return batch.process(done.stdout.splitlines())


def test_each_fact_is_answered_as_alone(tmp_path):
    kept = tmp_path / "kept"
    kept.write_text("secret\n")
    kept.chmod(0o640)
    values = read([
        (FileContents, {"path": str(kept)}),
        (FileContents, {"path": str(tmp_path / "gone")}),
        (Failing, {}),
        (FileDigests, {"paths": [str(kept), str(tmp_path / "gone")]}),
        (Unterminated, {}),
        (MissingDirectories, {"paths": [str(tmp_path), str(kept)]}),
        (FileModes, {"paths": [str(kept)]}),
    ])
    assert values == [
        ["secret"],
        None,  # FileContents' own answer for a missing file
        {},  # a failed command gives the fact's default
        {str(kept): hashlib.sha256(b"secret\n").hexdigest()},
        ["one", "two"],
        [str(kept)],
        {str(kept): "640"},
    ]


def test_a_cut_reading_is_refused():
    batch = Batch()
    batch.command(facts=((FileModes, (("paths", ["/"]),)), (FileModes, (("paths", ["/"]),))))
    try:
        batch.process(["755 /", f"{batch.marker} 0"])
    except FactProcessError as err:
        assert "read 1 of 2 facts" in str(err)
    else:
        raise AssertionError("a reading missing a fact was accepted")


def test_a_per_path_fact_serves_fewer_paths_narrowed():
    held = {"paths": ["/a", "/b", "/c"]}
    assert _narrower(FileDigests, held, {"paths": ["/a", "/c"]})
    assert not _narrower(FileDigests, held, {"paths": ["/a", "/d"]})
    assert not _narrower(FileContents, {"path": "/a"}, {"path": "/a"})  # not per path: exact reads only
    assert _narrowed({"/a": "1", "/b": "2"}, {"paths": ["/b"]}) == {"/b": "2"}
    assert _narrowed(["/a", "/b"], {"paths": ["/b", "/c"]}) == ["/b"]


def test_stamps_are_read_by_directory_name(tmp_path):
    for name, text in {"web-h1-0": "aa7db07b\n", "odd:name": "x:y\n"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / ".stamp").write_text(text)
    (tmp_path / "unstamped").mkdir()
    values = read([(Stamps, {"root": str(tmp_path), "stamp": ".stamp"}),
                   (Stamps, {"root": str(tmp_path / "gone"), "stamp": ".stamp"})])
    assert values == [{"web-h1-0": "aa7db07b", "odd:name": "x:y"}, {}]
