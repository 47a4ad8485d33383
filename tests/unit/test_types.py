import pytest

from meshspec.spec.types import format_duration, parse_duration


@pytest.mark.parametrize(("text", "ms"), [("500ms", 500), ("2s", 2000), ("1m", 60_000), ("1h", 3_600_000), ("0s", 0)])
def test_durations_parse_to_milliseconds(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["5", 5, "5 seconds", "1.5s", "-1s", "", None])
def test_durations_without_a_unit_are_refused(bad):
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


@pytest.mark.parametrize("long", ["2562048h", "9" * 400 + "s"])  # the second is infinite as a float (the fuzzer's find)
def test_durations_longer_than_consul_reads_are_refused(long):
    assert parse_duration("2562047h") == 2562047 * 3_600_000
    with pytest.raises(ValueError, match="longer than the longest duration Consul reads, 2562047h"):
        parse_duration(long)


@pytest.mark.parametrize(("ms", "text"), [(1500, "1500ms"), (2000, "2s"), (60_000, "1m"), (7_200_000, "2h"), (0, "0ms")])
def test_durations_format_to_the_shortest_exact_unit(ms, text):
    assert format_duration(ms) == text
    assert parse_duration(format_duration(ms)) == ms
