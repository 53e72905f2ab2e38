"""--memlens-fail-on-increase: the test allocates MEMLENS_TEST_ALLOC_MIB MiB (written), so a
run with a larger value than the baseline run's is an increase by construction."""

import os

MiB = 1 << 20


def test_allocates():
    n = int(os.environ.get("MEMLENS_TEST_ALLOC_MIB", "8"))
    data = b"\x01" * (n * MiB)
    assert len(data) == n * MiB
