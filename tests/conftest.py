"""Shared test configuration.

Kernel tests carry the ``kernel`` marker. They skip with a sentence saying what
is missing when run without root; under CI (NETDEVKIT_REQUIRE_KERNEL=1, root
on a 6.18 kernel) a skipped kernel test is turned into a failure, so a green CI
always means the real kernel was exercised.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

REQUIRE_KERNEL = os.environ.get("NETDEVKIT_REQUIRE_KERNEL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: creates network namespaces and veth pairs")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if REQUIRE_KERNEL and report.skipped and "kernel" in item.keywords:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"kernel test skipped under NETDEVKIT_REQUIRE_KERNEL=1: {reason}"
