#!/usr/bin/env python3
"""OCL_ICD_VENDORS folders, so that a test loads only the OpenCL implementations it means to use (another
vendor's ICD can abort a process: Intel's libigdrcl makes AddressSanitizer binaries abort).

  opencl_icd.py DIR NAME LIBRARY   write DIR/NAME/NAME.icd naming LIBRARY when the dynamic loader finds it;
                                   print DIR/NAME, or nothing when the library is missing
  opencl_icd.py DIR system         DIR/system: the machine's ICD files (/etc/OpenCL/vendors) except Intel's
                                   libigdrcl and rusticl (the suites run on rusticl in a registration of their
                                   own); print DIR/system
"""
import ctypes
import glob
import os
import sys


def main():
    out = sys.argv[1]
    if sys.argv[2] == "system":
        folder = os.path.join(out, "system")
        os.makedirs(folder, exist_ok=True)
        for old in glob.glob(os.path.join(folder, "*.icd")):
            os.remove(old)
        for icd in sorted(glob.glob("/etc/OpenCL/vendors/*.icd")):
            with open(icd) as f:
                lib = f.read().strip()
            if "igdrcl" in lib or "Rusticl" in lib:
                continue
            with open(os.path.join(folder, os.path.basename(icd)), "w") as f:
                f.write(lib + "\n")
        print(folder)
        return 0
    name, lib = sys.argv[2], sys.argv[3]
    try:
        ctypes.CDLL(lib)
    except OSError:
        return 0
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name + ".icd"), "w") as f:
        f.write(lib + "\n")
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
