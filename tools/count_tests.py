#!/usr/bin/env python3
"""Count test cases in meson's testlog.json: each TAP 'ok'/'not ok' line of a TAP suite is one case;
a suite that printed none (crash, timeout, exit-code protocol) counts once by its result.
Prints 'tests: N passed, M failed, K skipped' as the last line.
FLASHATTN_REQUIRE_BACKEND=1: a suite that skipped because no backend answered counts as failed (the machine
has an OpenCL implementation, so such a skip means the suites could not reach it)."""
import json
import os
import re
import sys

require_backend = os.environ.get('FLASHATTN_REQUIRE_BACKEND') == '1'

passed = failed = skipped = 0
for line in open(sys.argv[1]):
    entry = json.loads(line)
    out = entry.get('stdout') or ''
    cases = re.findall(r'^(?:not ok|ok)\b[^\n]*', out, re.M)
    whole_skip = re.search(r'^1\.\.0\s*#\s*SKIP', out, re.M | re.I)
    result = entry.get('result', '')
    if cases:
        for c in cases:
            if re.search(r'#\s*SKIP', c, re.I):
                skipped += 1
            elif c.startswith('not ok'):
                failed += 1
            else:
                passed += 1
        if result in ('FAIL', 'TIMEOUT', 'ERROR') and not any(c.startswith('not ok') for c in cases):
            failed += 1  # the suite died after its last reported case
    elif whole_skip and require_backend and re.search(r'no backend', out, re.I):
        failed += 1
        print(f"{entry.get('name')}: skipped for want of a backend, on a machine that has one: counted as failed")
    elif whole_skip or result == 'SKIP':
        skipped += 1
    elif result in ('OK', 'EXPECTEDFAIL'):
        passed += 1
    else:
        failed += 1
print(f'tests: {passed} passed, {failed} failed, {skipped} skipped')
sys.exit(1 if failed else 0)
