#!/usr/bin/env python3
"""Benchmark CSVs (flashattn-bench, sdpa_anchor.py) side by side; dev/gpu_run.sh's tool.

  compare.py REFERENCE.csv OURS.csv [OURS2.csv ...]
      TFLOP/s of every row of OURS beside the same shape in REFERENCE, and the ratios. REFERENCE is
      sdpa_anchor.py's CSV (its torch-flash and torch-cudnn rows: FA2 and cuDNN) or a flashattn-bench CSV (its
      backend-algo, e.g. CUDA's sm_80 kernels beside OpenCL's).
  compare.py --plot OUT.png TITLE CSV... [--modes fwd,bwd,fwdbwd]
      the paper's Figure 3: runtime and peak memory against sequence length, one line per (backend-algo,
      mode), from flashattn-bench and sdpa_anchor.py CSVs; needs gnuplot."""
import csv
import math
import os
import subprocess
import sys
import tempfile

KEY = ('dtype', 'batch', 'heads_q', 'seqlen_q', 'seqlen_k', 'head_dim', 'causal', 'mode')
# Block-sparse and dropout rows (flashattn-bench only; PyTorch's rows are dense).
EXTRA = (('mask', 'dense'), ('density', '1'), ('dropout', '0'))


def rows(path):
    with open(path) as f:
        return [r for r in csv.DictReader(l for l in f if not l.startswith('#'))]


def name(r):
    return r['backend'] if r['backend'].startswith('torch') else f"{r['backend']}-{r['algo']}"


def key(r):
    return tuple(r[k] for k in KEY) + tuple(r.get(k) or d for k, d in EXTRA)


def tflops(r):
    try:
        return float(r['tflops'])
    except ValueError:
        return float('nan')


def ratio(a, b):
    return a / b if b and not math.isnan(b) else float('nan')


def compare(ref_path, paths):
    ref, cols = {}, []
    for r in rows(ref_path):
        ref.setdefault(key(r), {})[name(r)] = tflops(r)
        if name(r) not in cols:
            cols.append(name(r))
    print(f'{"ours":16s} {"dtype":5s} {"d":>3s} {"c":>1s} {"S":>6s} {"mode":6s} {"mask":>12s} {"p":>4s} {"TFLOP/s":>8s}' +
          ''.join(f' {c[:12]:>12s} {"/" + c[:11]:>12s}' for c in cols))
    for path in paths:
        for r in rows(path):
            k, ours = key(r), tflops(r)
            line = (f'{name(r):16s} {r["dtype"]:5s} {r["head_dim"]:>3s} {r["causal"]:>1s} {r["seqlen_q"]:>6s} '
                    f'{r["mode"]:6s} {k[-3] + ":" + k[-2]:>12s} {k[-1]:>4s} {ours:8.1f}')
            for c in cols:
                theirs = ref.get(k, {}).get(c, float('nan'))
                line += f' {theirs:12.1f} {ratio(ours, theirs):12.2f}'
            print(line)


def plot(args):
    modes = None
    if '--modes' in args:
        i = args.index('--modes')
        modes = set(args[i + 1].split(','))
        del args[i:i + 2]
    out, title, paths = args[0], args[1], args[2:]
    series = {}
    for path in paths:
        for r in rows(path):
            if modes and r['mode'] not in modes:
                continue
            try:
                ms = float(r['ms'])
            except ValueError:
                continue
            if not math.isnan(ms):
                series.setdefault(f"{name(r)} {r['mode']}", []).append((int(r['seqlen_q']), ms, int(r['peak_bytes']) / 2**20))
    tmp = tempfile.mkdtemp()
    plots_t, plots_m = [], []
    for i, (label, pts) in enumerate(sorted(series.items())):
        dat = os.path.join(tmp, f'{i}.dat')
        with open(dat, 'w') as f:
            for s, ms, mb in sorted(pts):
                f.write(f'{s} {ms} {mb}\n')
        plots_t.append(f"'{dat}' using 1:2 with linespoints title '{label}'")
        if label.endswith(' fwd') or label.endswith(' fwdbwd'):
            plots_m.append(f"'{dat}' using 1:3 with linespoints title '{label}'")
    script = f"""set terminal pngcairo size 1400,560 font ',10'
set output '{out}'
set multiplot layout 1,2 title '{title}'
set logscale xy 2
set logscale y 10
set grid
set key outside right top font ',8'
set xlabel 'sequence length'
set ylabel 'runtime (ms)'
plot {', '.join(plots_t)}
set ylabel 'peak device memory (MiB)'
plot {', '.join(plots_m)}
unset multiplot
"""
    subprocess.run(['gnuplot'], input=script, text=True, check=True)
    print(f'wrote {out}')


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--plot' and len(sys.argv) >= 5:
        plot(sys.argv[2:])
    elif len(sys.argv) >= 3 and not sys.argv[1].startswith('-'):
        compare(sys.argv[1], sys.argv[2:])
    else:
        sys.exit(__doc__)
