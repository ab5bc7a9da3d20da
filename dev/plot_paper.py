#!/usr/bin/env python3
"""Draw the paper's Figure 3 from benchmark CSVs (flashattn-bench and/or sdpa_anchor.py): runtime and peak
memory against sequence length, one line per (backend-algo, mode). Needs gnuplot.
usage: plot_paper.py OUT.png TITLE CSV... [--modes fwd,bwd,fwdbwd]"""
import csv
import math
import os
import subprocess
import sys
import tempfile

args = sys.argv[1:]
modes = None
if '--modes' in args:
    i = args.index('--modes')
    modes = set(args[i + 1].split(','))
    del args[i:i + 2]
out, title, paths = args[0], args[1], args[2:]
series = {}
for path in paths:
    with open(path) as f:
        for r in csv.DictReader(l for l in f if not l.startswith('#')):
            if modes and r['mode'] not in modes:
                continue
            try:
                ms = float(r['ms'])
            except ValueError:
                continue
            if math.isnan(ms):
                continue
            name = r['backend'] if r['backend'].startswith('torch') else f"{r['backend']}-{r['algo']}"
            series.setdefault(f"{name} {r['mode']}", []).append((int(r['seqlen_q']), ms, int(r['peak_bytes']) / 2**20))
tmp = tempfile.mkdtemp()
plots_t, plots_m = [], []
for i, (name, pts) in enumerate(sorted(series.items())):
    dat = os.path.join(tmp, f'{i}.dat')
    with open(dat, 'w') as f:
        for s, ms, mb in sorted(pts):
            f.write(f'{s} {ms} {mb}\n')
    plots_t.append(f"'{dat}' using 1:2 with linespoints title '{name}'")
    if name.endswith(' fwd') or name.endswith(' fwdbwd'):
        plots_m.append(f"'{dat}' using 1:3 with linespoints title '{name}'")
script = f"""set terminal pngcairo size 1400,560 font ',10'
set output '{out}'
set multiplot layout 1,2 title '{title}'
set logscale xy 2
set logscale y 10
set grid
set key top left font ',8'
set xlabel 'sequence length'
set ylabel 'runtime (ms)'
plot {', '.join(plots_t)}
set ylabel 'peak device memory (MiB)'
plot {', '.join(plots_m)}
unset multiplot
"""
subprocess.run(['gnuplot'], input=script, text=True, check=True)
print(f'wrote {out}')
