"""meshspec.common: the formats the deploy and the runtime share, each decided once."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from meshspec.cli import app
from meshspec.common.consul_token import TOKEN_ENV, read_token, token_in
from meshspec.common.digest import digest, digest_text
from meshspec.common.durations import format_duration, parse_duration


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (10, "10s"), (60, "1m"), (90, "90s"), (7200, "2h"),
                                               (0, "0ms"), (1.5, "1500ms")])
def test_durations_format_to_the_shortest_exact_unit_and_parse_back(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_digest_is_the_sha256_prefix_of_sorted_json():
    """Stamps, tags and spec-hashes written before this module existed keep their values."""
    value = {"b": [1, "x"], "a": None}
    assert digest(value) == hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
    assert digest(value) == digest({"a": None, "b": [1, "x"]})
    assert digest_text("/srv/haproxy.cfg", 12) == hashlib.sha256(b"/srv/haproxy.cfg").hexdigest()[:12]


def test_the_token_file_wins_over_the_environment(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert read_token(path, {TOKEN_ENV: "from-env"}) == "from-file"
    assert read_token(None, {TOKEN_ENV: "from-env"}) == "from-env"
    assert read_token(None, {}) is None
    assert token_in(["  spaced  ", "ignored"]) == "spaced" and token_in([]) is None and token_in("\n") is None


def test_a_missing_token_file_fails_unless_it_may_be_missing(tmp_path):
    missing = tmp_path / "not-yet"
    with pytest.raises(FileNotFoundError):
        read_token(missing, {})
    assert read_token(missing, {TOKEN_ENV: "from-env"}, missing_ok=True) == "from-env"


def test_the_controller_refuses_a_wait_it_cannot_parse(tmp_path):
    """It used to wait 300 s on any duration it could not read."""
    result = CliRunner().invoke(app, ["controller", "--consul", "127.0.0.1:1", "--haproxy-runtime", "127.0.0.1:1",
                                      "--listen", "127.0.0.1:0", "--haproxy-config", str(tmp_path / "cfg"),
                                      "--wait", "soon"])
    assert result.exit_code == 2
    assert "--wait" in result.output and "invalid duration" in result.output
