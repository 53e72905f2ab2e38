"""The exceptions of the memlens package: a failed `memlens` command becomes a MemlensError
(or the subclass its exit code names) carrying the exit code and memlens's own message."""

# memlens's exit codes (docs/cli.md, "Exit codes"), in words.
EXIT_CODES = {
    1: "unexpected failure",
    2: "bad command-line usage",
    3: "the process does not exist or has exited",
    4: "permission denied",
    5: "the target is not supported",
    6: "a recording file is missing, corrupt or truncated",
    7: "the peak budget was exceeded",
    8: "an output file cannot be written",
    9: "the Python view could not be read completely or consistently",
    10: "serve cannot listen on its address",
    11: "diff: the two files cannot be compared",
}


class MemlensError(Exception):
    """A memlens command failed.

    exit_code: memlens's exit code (docs/cli.md), or None when memlens did not run to an exit
    (the binary is missing, it was killed by a signal: then `signal` is set).
    message: what memlens said on stderr (its `memlens: error: ...` and `hint` lines, the
    prefix removed), or the package's own explanation.
    command: the command line that was run, as a list (None when none ran).
    """

    def __init__(self, message, exit_code=None, command=None, signal=None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.command = command
        self.signal = signal

    def __str__(self):
        if self.exit_code is None:
            return self.message
        return "%s (memlens exit code %d: %s)" % (
            self.message,
            self.exit_code,
            EXIT_CODES.get(self.exit_code, "unknown"),
        )


class BinaryNotFound(MemlensError):
    """No `memlens` executable was found (see memlens.find_binary)."""


class UsageError(MemlensError):
    """Exit 2: memlens refused the command line (a value out of range, an unknown flag)."""


class NoSuchProcess(MemlensError):
    """Exit 3: the process does not exist, has exited, or exited while it was read."""


class AccessDenied(MemlensError):
    """Exit 4: the kernel refused access to the process, or another tracer holds it."""


class Unsupported(MemlensError):
    """Exit 5: not a supported target (a kernel thread, or a Python memlens cannot read)."""


class RecordingError(MemlensError):
    """Exit 6: a recording file is missing, corrupt or truncated."""


class OutputError(MemlensError):
    """Exit 8: an output file cannot be written (or the disk filled up)."""


class InconsistentRead(MemlensError):
    """Exit 9: the Python view could not be read completely or consistently."""


class MemoryBudgetExceeded(MemlensError):
    """A block or test run under memlens.limit() went over its budget.

    exit_code is 7, the code of `memlens run --max-peak` exceeded. `measurement` holds the
    figures (a memlens.Measurement); `budget` names which budget failed ("max_peak" or
    "max_growth"), `limit` its value in bytes and `value` the measured bytes.
    """

    def __init__(self, message, measurement, budget, limit, value):
        super().__init__(message, exit_code=7)
        self.measurement = measurement
        self.budget = budget
        self.limit = limit
        self.value = value

    def __str__(self):
        return self.message


_BY_CODE = {
    2: UsageError,
    3: NoSuchProcess,
    4: AccessDenied,
    5: Unsupported,
    6: RecordingError,
    8: OutputError,
    9: InconsistentRead,
}


def memlens_message(stderr):
    """memlens's error and hint lines of `stderr` (text), without their `memlens: ` prefix;
    every non-empty line when it printed none of those (clap's usage errors, a crash)."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    picked = []
    for line in lines:
        for prefix in ("memlens: error: ", "memlens: hint: "):
            if line.startswith(prefix):
                kind = "hint: " if "hint" in prefix else ""
                picked.append(kind + line[len(prefix):])
    if not picked:
        picked = [line[9:] if line.startswith("memlens: ") else line for line in lines]
    return "\n".join(picked)


def error_for(returncode, stderr, command):
    """The exception for a memlens run that exited with `returncode` (negative: killed by
    that signal, as subprocess reports it) having printed `stderr`."""
    message = memlens_message(stderr)
    if returncode < 0:
        return MemlensError(
            "memlens was killed by signal %d%s" % (-returncode, ": " + message if message else ""),
            command=command,
            signal=-returncode,
        )
    if not message:
        message = "memlens exited with %d and printed no message" % returncode
    cls = _BY_CODE.get(returncode, MemlensError)
    return cls(message, exit_code=returncode, command=command)
