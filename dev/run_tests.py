#!/usr/bin/env python3
"""Run a carried build's registered tests on a machine where the build tree sits at another path (the
GPU machine), without meson: reads BUILD/tests.json (written here by
`meson introspect BUILD --tests > BUILD/tests.json`), rewrites the source root, runs each test with its
environment plus extra VAR=VALUE pairs, and counts TAP lines as tools/count_tests.py does.

usage: run_tests.py BUILD OLD_ROOT LOGDIR LABEL [VAR=VALUE ...]
ONLY=name,name (in the environment) runs only those tests; TEST_TIMEOUT=N caps each test's seconds."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

build, old_root, logdir, label = sys.argv[1:5]
extra = dict(kv.split('=', 1) for kv in sys.argv[5:])
root = os.getcwd()
tests = json.load(open(os.path.join(build, 'tests.json')))
os.makedirs(logdir, exist_ok=True)
passed = failed = skipped = 0


def fix(s):
    return s.replace(old_root, root)


only = set(filter(None, os.environ.get('ONLY', '').split(',')))
cap = int(os.environ.get('TEST_TIMEOUT', '0'))
for t in tests:
    if only and t['name'] not in only:
        continue
    env = dict(os.environ)
    for k, v in (t.get('env') or {}).items():
        v = fix(v)
        if k == 'LD_LIBRARY_PATH' and os.environ.get(k):  # keep the carried OpenCL loader's path
            v = v + ':' + os.environ[k]
        env[k] = v
    env.update(extra)
    cmd = [fix(c) for c in t['cmd']]
    # An interpreter recorded at build time (a pyenv shim) may not exist here: take the same name from PATH.
    if not os.path.exists(cmd[0]) and shutil.which(os.path.basename(cmd[0])):
        cmd[0] = shutil.which(os.path.basename(cmd[0]))
    name = re.sub(r'[^A-Za-z0-9_.-]', '_', t['name'])
    start = time.time()
    try:
        r = subprocess.run(cmd, env=env, cwd=fix(t.get('workdir') or root), capture_output=True, text=True,
                           timeout=min(t.get('timeout') or 600, cap) if cap else (t.get('timeout') or 600))
        out, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b'').decode(errors='replace') if isinstance(e.stdout, bytes) else (e.stdout or ''), 'timeout'
    open(os.path.join(logdir, f'{label}-{name}.log'), 'w').write(out)
    cases = re.findall(r'^(?:not ok|ok)\b[^\n]*', out, re.M)
    p = sum(1 for c in cases if c.startswith('ok') and not re.search(r'#\s*SKIP', c, re.I))
    s = sum(1 for c in cases if re.search(r'#\s*SKIP', c, re.I))
    f = sum(1 for c in cases if c.startswith('not ok'))
    if not cases:
        if re.search(r'^1\.\.0\s*#\s*SKIP', out, re.M | re.I):
            s = 1
        elif rc == 0:
            p = 1
        else:
            f = 1
    elif rc != 0 and f == 0:
        f = 1
    passed, failed, skipped = passed + p, failed + f, skipped + s
    print(f'{label:8s} {t["name"]:32s} rc={rc} {p} passed {f} failed {s} skipped ({time.time() - start:.0f} s)', flush=True)
    for line in out.splitlines():
        if line.startswith('not ok'):
            print('    ' + line[:300])
print(f'{label}: {passed} passed, {failed} failed, {skipped} skipped')
