"""Size parsing (the same cases as memlens's own flags::size tests), size formatting, and the
mapping of memlens's exit codes and messages to exceptions."""

import os
import subprocess
import sys

import pytest

import memlens
from memlens import _binary, _errors, _text

MAX_SIZE = 1 << 63


@pytest.mark.parametrize(
    "text,expected",
    [
        ("512M", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("1000", 1000),
        ("1B", 1),
        ("8EiB", MAX_SIZE),
        ("0.5k", 512),
        ("9223372036854775808", MAX_SIZE),
        ("0000001K", 1024),
        ("200MiB", 200 << 20),
        (" 64 mb ", 64 << 20),
        (".5M", 1 << 19),
        (4096, 4096),
    ],
)
def test_sizes_parse_as_memlens_parses_them(text, expected):
    assert memlens.parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["16EiB", "8.0000001EiB", "9223372036854775809", "99999999999999999999999", "0", "0.0001",
     "000000000000000000000000000000000", 0, -1, MAX_SIZE + 1],
)
def test_sizes_out_of_range(text):
    with pytest.raises(ValueError) as e:
        memlens.parse_size(text)
    assert str(e.value) == "out of range: a size from 1B to 8EiB"


@pytest.mark.parametrize(
    "text", ["", ".", "1..2M", "-1", "12 parsecs", "1e3", "M", "\u0661\u0662M", None, 1.5, True]
)
def test_sizes_not_sizes(text):
    with pytest.raises(ValueError) as e:
        memlens.parse_size(text)
    assert str(e.value).startswith("not a size")


def test_sizes_format_as_memlens_prints_them():
    assert _text.format_size(0) == "0 B"
    assert _text.format_size(1023) == "1023 B"
    assert _text.format_size(1536) == "1.50 KiB"
    assert _text.format_size(1024) == "1.00 KiB"
    assert _text.format_size(200 << 20) == "200 MiB"
    assert _text.format_size(int(29.2 * (1 << 20))) == "29.2 MiB"
    assert _text.format_delta(-1536) == "-1.50 KiB"
    assert _text.format_delta(0) == "+0 B"


def test_escape_shows_control_characters():
    assert _text.escape("a\x1b[31mb\n") == "a\\u{1b}[31mb\\u{a}"
    assert _text.escape("caf\u00e9") == "caf\u00e9"


def test_messages_keep_errors_and_hints():
    err = (
        "memlens: warn: something else\n"
        "memlens: error: process 99 does not exist\n"
        "memlens: hint: check the PID\n"
    )
    assert _errors.memlens_message(err) == "process 99 does not exist\nhint: check the PID"
    # clap's usage errors have no prefix: every line is kept.
    assert _errors.memlens_message("error: unexpected argument '--x'\n\nUsage: memlens") == (
        "error: unexpected argument '--x'\nUsage: memlens"
    )


@pytest.mark.parametrize(
    "code,cls",
    [
        (2, memlens.UsageError),
        (3, memlens.NoSuchProcess),
        (4, memlens.AccessDenied),
        (5, memlens.Unsupported),
        (6, memlens.RecordingError),
        (8, memlens.OutputError),
        (9, memlens.InconsistentRead),
        (1, memlens.MemlensError),
        (42, memlens.MemlensError),
    ],
)
def test_exit_codes_map_to_exceptions(code, cls):
    e = _errors.error_for(code, "memlens: error: what went wrong\n", ["memlens", "x"])
    assert type(e) is cls
    assert isinstance(e, memlens.MemlensError)
    assert e.exit_code == code
    assert e.message == "what went wrong"
    assert e.command == ["memlens", "x"]
    assert "exit code %d" % code in str(e)


def test_a_signal_is_not_an_exit_code():
    e = _errors.error_for(-9, "", ["memlens"])
    assert e.exit_code is None and e.signal == 9
    assert "signal 9" in str(e)


def exited_pid():
    """A PID that existed and is gone (reaped): memlens must say exit 3."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_gone_process_is_no_such_process_with_memlens_message():
    pid = exited_pid()
    with pytest.raises(memlens.NoSuchProcess) as e:
        memlens.snapshot(pid)
    assert e.value.exit_code == 3
    assert str(pid) in e.value.message
    assert e.value.command[0] == memlens.find_binary()


def test_a_usage_error_is_exit_2():
    with pytest.raises(memlens.UsageError) as e:
        memlens.census(os.getpid(), growth="forever")
    assert e.value.exit_code == 2
    assert "not a duration" in e.value.message


def test_bad_pids_are_refused_before_running():
    for bad in (0, -1, "1", True):
        with pytest.raises(ValueError):
            memlens.snapshot(bad)


def test_memlens_bin_overrides_and_must_be_executable(monkeypatch, tmp_path):
    real = memlens.find_binary()
    monkeypatch.setenv("MEMLENS_BIN", real)
    assert memlens.find_binary() == real
    missing = str(tmp_path / "no-such-memlens")
    monkeypatch.setenv("MEMLENS_BIN", missing)
    with pytest.raises(memlens.BinaryNotFound) as e:
        memlens.snapshot()
    assert e.value.exit_code is None
    assert missing in e.value.message


def test_the_binary_of_this_environment_comes_before_path(monkeypatch):
    monkeypatch.delenv("MEMLENS_BIN", raising=False)
    scripts = [os.path.join(d, "memlens") for d in _binary._scripts_dirs()]
    installed = [p for p in scripts if os.access(p, os.X_OK)]
    monkeypatch.setenv("PATH", "")
    if installed:
        # Found without PATH: the environment's own binary.
        assert memlens.find_binary() == installed[0]
    else:
        with pytest.raises(memlens.BinaryNotFound) as e:
            memlens.find_binary()
        assert "MEMLENS_BIN" in e.value.message


def test_plugin_thresholds():
    from memlens.pytest_plugin import parse_threshold, threshold_bytes

    assert parse_threshold("10%") == ("pct", 0.1)
    assert parse_threshold(" 0% ") == ("pct", 0.0)
    assert parse_threshold("16MiB") == ("bytes", 16 << 20)
    assert threshold_bytes(parse_threshold("10%"), 100 << 20) == 10 << 20
    assert threshold_bytes(parse_threshold("16MiB"), 100 << 20) == 16 << 20
    for bad in ("-5%", "x%", "ten", "0"):
        with pytest.raises(ValueError):
            parse_threshold(bad)
