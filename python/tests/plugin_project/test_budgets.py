"""Budgets per test: scripts/test-packaging.sh expects test_over_peak_budget and
test_over_growth_budget to fail with memlens's explanation, and the others to pass."""

import pytest

MiB = 1 << 20
LEAKED = []


@pytest.mark.memlens(max_peak="100MiB")
def test_over_peak_budget():
    data = b"\x01" * (200 * MiB)  # written: resident
    assert len(data) == 200 * MiB


@pytest.mark.memlens(max_peak="400MiB")
def test_under_peak_budget():
    data = b"\x01" * (20 * MiB)
    assert len(data) == 20 * MiB


@pytest.mark.memlens(max_growth="16MiB")
def test_over_growth_budget():
    LEAKED.append(b"\x01" * (64 * MiB))  # still held when the test ends


@pytest.mark.memlens(max_growth="16MiB")
def test_under_growth_budget():
    data = b"\x01" * (64 * MiB)  # freed when the test returns
    assert len(data) == 64 * MiB


def test_not_measured():
    assert True
