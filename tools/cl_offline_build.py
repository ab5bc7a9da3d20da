#!/usr/bin/env python3
"""Build every OpenCL program the backend can request (the list tools/cl-variants prints) for GPUs that this
machine does not have: Intel targets with ocloc (intel-opencl-icd), AMD targets with clang and the ROCm device
libraries (clang-15, rocm-device-libs). Each program is kernels/common.cl followed by its files, as the
backend assembles it (src/opencl/cl_context.c), built with the options the host would pass.

Prints one line per (target, program, kernel): registers, spills and scratch where the compiler reports them
(ocloc reports a kernel's spills as a build warning; clang's kernel-resource-usage remarks give VGPRs, SGPRs,
spills, scratch, LDS and occupancy), then a summary per target. A program that does not build is a failure:
its log's head is printed and the exit status is 1.

usage: cl_offline_build.py --lister BUILD/tools/cl-variants --kernels KERNELS_DIR [--jobs N] [--csv FILE] [--sample N]
                           TARGET...   (TARGET: intel:tgllp, intel:dg2, intel:pvc, amd:gfx90a, amd:gfx1030, ...)
"""
import argparse
import concurrent.futures
import csv
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SPILL = re.compile(r"kernel (\S+)\s+compiled SIMD(\d+) allocated (\d+) regs and spilled around (\d+)")
AMD_FIELDS = {"VGPRs": "vgprs", "SGPRs": "sgprs", "AGPRs": "agprs", "ScratchSize [bytes/lane]": "scratch",
              "Occupancy [waves/SIMD]": "occupancy", "SGPRs Spill": "sgpr_spill", "VGPRs Spill": "vgpr_spill",
              "LDS Size [bytes/block]": "lds"}


def program_source(kernels_dir, files):
    parts = []
    for name in ["common.cl"] + files.split():
        with open(os.path.join(kernels_dir, name)) as f:
            parts.append('#line 1 "%s"\n%s\n' % (name, f.read()))
    return "".join(parts)


def rocm_bitcode_dir():
    for d in glob.glob("/usr/lib/*/amdgcn/bitcode") + glob.glob("/opt/rocm*/amdgcn/bitcode"):
        if os.path.exists(os.path.join(d, "opencl.bc")):
            return d
    return None


def clang_for_amd():
    for c in ("clang-15", "clang-16", "clang-17", "clang"):
        if shutil.which(c):
            return c
    return None


def build_intel(device, src, options, work):
    cmd = ["ocloc", "compile", "-file", src, "-device", device, "-options", options, "-out_dir", work]
    r = subprocess.run(cmd, capture_output=True, text=True)
    log = r.stdout + r.stderr
    ok = r.returncode == 0 and "Build succeeded" in log
    spills = {m.group(1): {"simd": m.group(2), "regs": m.group(3), "spill": m.group(4)} for m in SPILL.finditer(log)}
    return ok, log, spills


def build_amd(clang, bitcode, cpu, src, options, work):
    obj, code = os.path.join(work, "k.o"), os.path.join(work, "k.hsaco")
    cmd = [clang, "-x", "cl", "-cl-std=CL1.2", "-target", "amdgcn-amd-amdhsa", "-mcpu=" + cpu, "-O3",
           "-Xclang", "-finclude-default-header", "--rocm-device-lib-path=" + bitcode,
           "-Rpass-analysis=kernel-resource-usage", "-c", src, "-o", obj] + options.split()
    r = subprocess.run(cmd, capture_output=True, text=True)
    log = r.stdout + r.stderr
    ok = r.returncode == 0
    if ok:  # link: a builtin the device libraries lack shows up here as an undefined symbol
        r2 = subprocess.run([clang, "-target", "amdgcn-amd-amdhsa", "-mcpu=" + cpu, "-Wl,--no-undefined", obj,
                             "-o", code], capture_output=True, text=True)
        ok, log = r2.returncode == 0, log + r2.stdout + r2.stderr
    usage, name = {}, None
    for line in log.splitlines():
        m = re.search(r"remark: +(.*?): (\S+) \[-Rpass-analysis", line)
        if not m:
            continue
        key, val = m.group(1).strip(), m.group(2)
        if key == "Function Name":
            name = val
            usage[name] = {}
        elif name and key in AMD_FIELDS:
            usage[name][AMD_FIELDS[key]] = val
    return ok, log, usage


def build_one(job):
    target, files, kernels, options, kernels_dir, tools = job
    kind, dev = target.split(":", 1)
    with tempfile.TemporaryDirectory(prefix="fa-offline-") as work:
        src = os.path.join(work, "program.cl")
        with open(src, "w") as f:
            f.write(program_source(kernels_dir, files))
        t0 = time.monotonic()
        if kind == "intel":
            ok, log, info = build_intel(dev, src, options, work)
        else:
            ok, log, info = build_amd(tools["clang"], tools["bitcode"], dev, src, options, work)
        return target, files, kernels, options, ok, log, info, time.monotonic() - t0


def describe(kind, kernel, info):
    k = info.get(kernel)
    if kind == "intel":
        return "SIMD%s %s regs, spilled ~%s bytes" % (k["simd"], k["regs"], k["spill"]) if k else "no spill reported"
    if not k:
        return "no resource remark"
    return "VGPRs %s SGPRs %s AGPRs %s spill v%s/s%s scratch %s LDS %s occupancy %s" % tuple(
        k.get(f, "?") for f in ("vgprs", "sgprs", "agprs", "vgpr_spill", "sgpr_spill", "scratch", "lds", "occupancy"))


def spread(items, k):
    return [items[(2 * i + 1) * len(items) // (2 * k)] for i in range(min(k, len(items)))]


def sample(variants, n):
    """About n of the variants: from each family (files and kernels) a share proportional to its size, at least
    one, half of it from the head dims users run most (64, 128, 256), all evenly spaced through the family's
    list (which cl-variants orders by dtype, head dim and options)."""
    families = {}
    for v in variants:
        families.setdefault((v[0], v[1]), []).append(v)
    picked = []
    for members in families.values():
        k = min(len(members), max(1, round(n * len(members) / len(variants))))
        common = [v for v in members if re.search(r"-DHEAD_DIM=(64|128|256)\b", v[2])]
        first = spread(common, k // 2)
        picked += first + spread([v for v in members if v not in first], k - len(first))
    return picked


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lister", required=True, help="the cl-variants executable")
    ap.add_argument("--lister-args", default="", help="its device limits (default: 64 KiB, GPU)")
    ap.add_argument("--kernels", required=True, help="the kernels/ directory")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--csv", help="write one row per (target, program, kernel) here")
    ap.add_argument("--sample", type=int, default=0,
                    help="build about N programs, spread evenly over each family (same files and kernels) and at "
                         "least one of every family, instead of all")
    ap.add_argument("targets", nargs="+")
    a = ap.parse_args()

    tools = {"clang": clang_for_amd(), "bitcode": rocm_bitcode_dir()}
    missing = []
    for t in a.targets:
        kind = t.split(":", 1)[0]
        if kind == "intel" and not shutil.which("ocloc"):
            missing.append("%s: ocloc not found (Debian: intel-opencl-icd)" % t)
        elif kind == "amd" and not (tools["clang"] and tools["bitcode"]):
            missing.append("%s: clang or the ROCm device libraries not found (Debian: clang-15 rocm-device-libs)" % t)
        elif kind not in ("intel", "amd"):
            missing.append("%s: unknown target kind (intel:DEVICE or amd:GFX)" % t)
    if missing:
        print("\n".join("error: " + m for m in missing), file=sys.stderr)
        return 1

    listing = subprocess.run([a.lister] + a.lister_args.split(), capture_output=True, text=True, check=True).stdout
    variants = [line.split("\t") for line in listing.splitlines() if line.strip()]
    if a.sample > 0:
        variants = sample(variants, a.sample)
    jobs = [(t, f, k, o, a.kernels, tools) for t in a.targets for f, k, o in variants]
    print("# %d programs x %d targets, %d jobs in parallel" % (len(variants), len(a.targets), a.jobs), flush=True)
    rows, stats = [], {t: [0, 0, 0.0, 0] for t in a.targets}  # built, failed, seconds, kernels that spill
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        for target, files, kernels, options, ok, log, info, secs in pool.map(build_one, jobs):
            st = stats[target]
            st[2] += secs
            kind = target.split(":", 1)[0]
            if not ok:
                st[1] += 1
                print("FAILED %s [%s] %s\n%s" % (target, files, options, "\n".join(log.splitlines()[:30])), flush=True)
                continue
            st[0] += 1
            for kernel in kernels.split():
                text = describe(kind, kernel, info)
                k = info.get(kernel, {})
                spilled = (kind == "intel" and bool(k)) or int(k.get("vgpr_spill", 0) or 0) + int(k.get("sgpr_spill", 0) or 0) > 0
                st[3] += spilled
                print("%s\t%s\t%s\t%s\t%s" % (target, kernel, options, text, "%.1fs" % secs))
                rows.append({"target": target, "files": files, "kernel": kernel, "options": options,
                             "spilled": int(spilled), "report": text, "seconds": "%.2f" % secs})
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["target"])
            w.writeheader()
            w.writerows(rows)
    failed = 0
    for t, (built, bad, secs, spills) in stats.items():
        print("# %s: %d built, %d failed, %d kernels spill, %.0f compiler-seconds" % (t, built, bad, spills, secs))
        failed += bad
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
