"""Test tiers, and the CI skip policy.

Unit tests always run; root, browser and docker tests skip with a reason on a developer's machine
that lacks the component. Under CI (`CI` set to anything but empty/0/false) a skip means CI would
pass having tested nothing of that component, so every skip fails the run, except a skip for a
test that depends on a *kernel feature* on the explicit allow-list below (its absence, or for a
refusal-path test its presence): no setup script can install a qdisc the kernel was built without.
Such a skip says so at the start of its reason, e.g.
`pytest.skip("kernel feature netem missing: sch_netem is not built for this kernel")`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

# Kernel features a test may skip for under CI (their absence is the machine's, not the setup's).
KERNEL_FEATURE_SKIPS = {"netem"}
_KERNEL_SKIP = re.compile(r"^kernel feature (?P<feature>[\w-]+) (missing|present): ")


def ci_enabled(env: dict[str, str] | os._Environ = os.environ) -> bool:
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_allowed_under_ci(reason: str) -> bool:
    """Only a skip that depends on an allow-listed kernel feature may stand under CI."""
    match = _KERNEL_SKIP.match(reason)
    return bool(match) and match["feature"] in KERNEL_FEATURE_SKIPS


def _ovs_running() -> bool:
    if not shutil.which("ovs-vsctl"):
        return False
    return subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode == 0


def _docker_running() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config, items):
    reasons = {}
    if os.geteuid() != 0:
        reasons["root"] = "needs root (network namespaces and OVS); CI runs as root"
    elif not _ovs_running():
        reasons["root"] = "needs a running Open vSwitch: run 'make setup' (starts ovs-vswitchd)"
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
        reasons["browser"] = "needs Debian's chromium: run 'make setup'"
    if any("docker" in item.keywords for item in items) and not _docker_running():
        reasons["docker"] = "needs a running Docker engine: run 'make setup' (starts dockerd)"
    for item in items:
        for marker, reason in reasons.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, turn a skip for a missing component into a failure naming it."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and ci_enabled()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if skip_allowed_under_ci(reason):
        return
    report.outcome = "failed"
    report.longrepr = (f"CI is set: a skip for a missing component fails the run ({reason}). Only a test that "
                       f"depends on a kernel feature in {sorted(KERNEL_FEATURE_SKIPS)} may skip, with a reason "
                       "starting 'kernel feature NAME missing: ' (or 'present: ').")


def pytest_sessionfinish(session, exitstatus):
    """Under CI, collecting no tests at all is a failure too (pytest's exit code 5 is not success)."""
    if ci_enabled() and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
