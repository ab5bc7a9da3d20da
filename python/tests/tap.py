#!/usr/bin/env python3
"""Run the pytest suite beside this file and report each case as a TAP line on stdout, for meson's TAP
protocol (so ./run test counts the cases); pytest's own report goes to stderr.

It runs under the virtual environment in $FLASHATTN_PYENV (./run test makes it with the packages the suite
needs) and skips the whole suite when there is none. Extra arguments go to pytest.
"""
import os
import sys

env = os.environ.get("FLASHATTN_PYENV", "")
env_python = os.path.join(env, "bin", "python")
if env and os.path.realpath(sys.prefix) != os.path.realpath(env):
    if not os.access(env_python, os.X_OK):
        print(f"1..0 # SKIP no Python environment at {env} (./run test makes it)")
        sys.exit(0)
    os.execv(env_python, [env_python, __file__] + sys.argv[1:])

import pytest  # noqa: E402

tap = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # pytest's terminal report, and anything a test prints, to stderr


class TapReport:
    def __init__(self):
        self.count = 0

    def pytest_collectreport(self, report):
        # A module that skips itself (torch absent) is one skipped line; one that fails to import, a failure.
        if report.skipped or report.failed:
            self.count += 1
            reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else "error"
            tap.write(f"ok {self.count} {report.nodeid} # SKIP {reason}\n" if report.skipped
                      else f"not ok {self.count} {report.nodeid} (collection)\n")

    def pytest_runtest_logreport(self, report):
        # One line per case: its call phase, or the setup phase that skipped or failed it.
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.count += 1
            name = report.nodeid.replace("#", "")
            if report.skipped:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
                tap.write(f"ok {self.count} {name} # SKIP {reason}\n")
            else:
                tap.write(f"{'ok' if report.passed else 'not ok'} {self.count} {name}\n")
        elif report.when == "teardown" and report.failed:
            self.count += 1
            tap.write(f"not ok {self.count} {report.nodeid} (teardown)\n")


plugin = TapReport()
status = pytest.main(["-q", "-p", "no:cacheprovider", "-rfE", os.path.dirname(os.path.abspath(__file__))]
                     + sys.argv[1:], plugins=[plugin])
tap.write(f"1..{plugin.count}\n")
sys.exit(0 if status in (0, 5) and plugin.count else int(status) or 1)
