"""Sorts the sanitizer reports of a fuzz log into ours and libhdf5's (for the
h5 target, which runs with crashes ignored: libhdf5 1.10.8 crashes on some
corrupt files, and loupe reads HDF5 in a child process for that reason).
A report is libhdf5's when the first frame outside the sanitizer/fuzzer
runtime is in libhdf5; leaks are always ours (suppressions cover libhdf5's).
usage: triage.py LOG   exit 1 when any report is ours."""
import re, sys

RUNTIME = re.compile(r"__interceptor_|__asan|__sanitizer|__ubsan|\bmalloc\b|\bcalloc\b|\brealloc\b|fuzzer::|"
                     r"libclang_rt|\bmem(cpy|move|set|cmp)\b|\bstr[a-z]+\b \(|/fuzz_h5\+")
ours = theirs = 0
report, frames = None, []


def close():
    global ours, theirs
    if report is None:
        return
    first = next((f for f in frames if not RUNTIME.search(f)), "")
    if "LeakSanitizer" in report or "libhdf5" not in first:
        ours += 1
        print("OURS: %s\n    first frame: %s" % (report.strip(), first.strip()))
    else:
        theirs += 1


for line in open(sys.argv[1], errors="replace"):
    if "ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line or "runtime error:" in line \
            or "deadly signal" in line:
        close()
        report, frames = line, []
    elif report is not None and re.match(r"\s+#\d+ ", line):
        frames.append(line)
close()
print("triage: %d report(s) in libhdf5 (upstream, ignored), %d in loupe" % (theirs, ours))
sys.exit(1 if ours else 0)
