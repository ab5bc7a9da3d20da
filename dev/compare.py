#!/usr/bin/env python3
"""Join flashattn-bench CSVs with sdpa_anchor.py's on the shape columns and print TFLOP/s and ratios:
compare.py ANCHOR.csv OURS.csv [OURS2.csv ...]"""
import csv
import sys

KEY = ('dtype', 'batch', 'heads_q', 'seqlen_q', 'seqlen_k', 'head_dim', 'causal', 'mode')


def rows(path):
    with open(path) as f:
        return [r for r in csv.DictReader(l for l in f if not l.startswith('#'))]


anchor = {}
for r in rows(sys.argv[1]):
    anchor.setdefault(tuple(r[k] for k in KEY), {})[r['backend']] = float(r['tflops'])
print(f'{"ours":14s} {"dtype":5s} {"d":>3s} {"c":>1s} {"S":>6s} {"mode":6s} {"TFLOP/s":>8s} {"FA2":>7s} {"cuDNN":>7s} {"/FA2":>6s} {"/cuDNN":>6s}')
for path in sys.argv[2:]:
    for r in rows(path):
        k = tuple(r[x] for x in KEY)
        a = anchor.get(k, {})
        ours = float(r['tflops']) if r['tflops'] not in ('', 'nan') else float('nan')
        fa2, cudnn = a.get('torch-flash', float('nan')), a.get('torch-cudnn', float('nan'))
        print(f'{r["backend"] + "-" + r["algo"]:14s} {r["dtype"]:5s} {r["head_dim"]:>3s} {r["causal"]:>1s} {r["seqlen_q"]:>6s} '
              f'{r["mode"]:6s} {ours:8.1f} {fa2:7.1f} {cudnn:7.1f} {ours / fa2:6.2f} {ours / cudnn:6.2f}')
