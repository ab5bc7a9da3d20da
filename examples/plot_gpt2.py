#!/usr/bin/env python3
"""Turn train_gpt2.py's CSVs into loss-curve figures (one PNG per context, drawn with gnuplot) and a Markdown
table for docs/BENCHMARKS.md, and one PNG of tokens/s, step time and peak memory by context: median step time and tokens/s (after --skip warm-up steps), their ratios to SDPA
and to standard attention, peak memory, and how far each loss curve is from the first standard-attention run
of its context (seed 0), beside the distance of a standard run from another initial seed (the run-to-run
noise) when there is one.

usage: plot_gpt2.py [--out-dir docs/figures] [--tag h200] [--skip 10] RUN.csv...
"""
import argparse
import csv
import os
import statistics
import subprocess
import tempfile


def read(path):
    with open(path) as f:
        lines = f.readlines()
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    if not rows:
        raise SystemExit(f"plot_gpt2: {path} has no steps")
    argv = lines[0].split() if lines[0].startswith("# train_gpt2") else []
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    return {"path": path, "attention": rows[0]["attention"], "seed": seed, "context": int(rows[0]["context"]),
            "batch": int(rows[0]["batch"]), "loss": [float(r["loss"]) for r in rows],
            "ms": [float(r["step_ms"]) for r in rows], "tokens": [float(r["tokens_per_s"]) for r in rows],
            "peak": max(int(r["peak_bytes"]) for r in rows)}


def distance(a, b):
    """Mean and max |a - b| over the steps both runs have."""
    d = [abs(x - y) for x, y in zip(a, b)]
    return statistics.fmean(d), max(d)


def plot(runs, context, path):
    tmp = tempfile.mkdtemp()
    lines = []
    for i, r in enumerate(runs):
        dat = os.path.join(tmp, f"{i}.dat")
        with open(dat, "w") as f:
            f.writelines(f"{step} {loss}\n" for step, loss in enumerate(r["loss"]))
        label = r["attention"] + (f", seed {r['seed']}" if r["seed"] else "")
        lines.append(f"'{dat}' using 1:2 with lines lw 1.5 title '{label}'")
    script = (f"set terminal pngcairo size 900,560\nset output '{path}'\n"
              f"set title 'GPT-2 small, byte-level, context {context}: training loss'\n"
              "set xlabel 'step'\nset ylabel 'cross-entropy (nats/byte)'\nset grid\nset key top right\n"
              "plot " + ", ".join(lines) + "\n")
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def plot_throughput(summary, path):
    """Clustered bars per context: tokens/s, median step time and peak memory of each attention."""
    attentions = sorted({a for _, a in summary})
    contexts = sorted({c for c, _ in summary})
    dat = os.path.join(tempfile.mkdtemp(), "bars.dat")
    with open(dat, "w") as f:
        for c in contexts:
            cells = [summary.get((c, a), (float("nan"),) * 3) for a in attentions]
            f.write(f"{c} " + " ".join(f"{tok} {ms} {peak}" for tok, ms, peak in cells) + "\n")
    panels = []
    for col, title in ((0, "tokens/s"), (1, "step time (ms)"), (2, "peak memory (GiB)")):
        cols = ", ".join(f"'{dat}' using {2 + 3 * i + col}:xtic(1) title '{a}'" for i, a in enumerate(attentions))
        panels.append(f"set title '{title}'\nplot {cols}\n")
    script = (f"set terminal pngcairo size 1200,420\nset output '{path}'\nset multiplot layout 1,3 "
              "title 'GPT-2 small training, by context length'\nset style data histograms\n"
              "set style histogram clustered gap 1\nset style fill solid 0.8 border -1\nset grid ytics\n"
              "set yrange [0:*]\nset xlabel 'context'\nset key below\n" + "".join(panels) + "unset multiplot\n")
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="docs/figures")
    ap.add_argument("--tag", default="h200")
    ap.add_argument("--skip", type=int, default=10, help="warm-up steps left out of the timings")
    ap.add_argument("csvs", nargs="+")
    args = ap.parse_args()
    runs = [read(p) for p in args.csvs]
    print("| attention | context | batch | steps | step ms | tokens/s | vs SDPA | vs standard | peak GiB "
          "| loss, last 20 | loss distance to standard (mean / max) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    summary = {}
    for context in sorted({r["context"] for r in runs}):
        group = sorted((r for r in runs if r["context"] == context), key=lambda r: r["seed"])
        plot(group, context, os.path.join(args.out_dir, f"gpt2-loss-{args.tag}-{context}.png"))
        tps = {}  # each attention's seed-0 run is the one ratios are taken to
        for r in group:
            tps.setdefault(r["attention"], statistics.median(r["tokens"][args.skip:] or r["tokens"]))
        standard = [r for r in group if r["attention"] == "math"]
        for r in group:
            ms = statistics.median(r["ms"][args.skip:] or r["ms"])
            tok = statistics.median(r["tokens"][args.skip:] or r["tokens"])
            summary.setdefault((context, r["attention"]), (tok, ms, r["peak"] / 2**30))
            ratio = lambda other: f"{tok / tps[other]:.2f}x" if other in tps else "-"  # noqa: E731
            dist = "-"
            if standard and r is not standard[0]:
                dist = "%.4f / %.4f" % distance(r["loss"], standard[0]["loss"])
            label = r["attention"] + (f" (seed {r['seed']})" if r["seed"] else "")
            print(f"| {label} | {context} | {r['batch']} | {len(r['loss'])} | {ms:.1f} | {tok:,.0f} | "
                  f"{ratio('sdpa')} | {ratio('math')} | {r['peak'] / 2**30:.2f} | "
                  f"{statistics.fmean(r['loss'][-20:]):.4f} | {dist} |")
    plot_throughput(summary, os.path.join(args.out_dir, f"gpt2-throughput-{args.tag}.png"))


if __name__ == "__main__":
    main()
