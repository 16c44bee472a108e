"""Sorts the findings of a fuzz target into ours and libhdf5's (for the h5
target, which runs in fork mode with crashes ignored: libhdf5 1.10.8 crashes
and hangs on some corrupt files, and loupe reads HDF5 in a child process with a
time limit for that reason). Each crash-*/leak-* input in DIR is replayed on
its own to get its stack. A report is libhdf5's when the first frame outside
the sanitizer/fuzzer runtime is in libhdf5; a leak is ours unless suppressed
(lsan_h5.supp holds libhdf5's own). Prints one line per finding.
usage: triage.py EXE DIR   exit 1 when any finding is ours."""
import glob, os, re, subprocess, sys

exe, d = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:allocator_may_return_null=1",
           LSAN_OPTIONS="suppressions=" + os.path.join(HERE, "lsan_h5.supp"))
RUNTIME = re.compile(r"__interceptor_|__asan|__sanitizer|__ubsan|in (malloc|calloc|realloc|free) |fuzzer::|"
                     r"libclang_rt|in (mem(cpy|move|set|cmp)|str[a-z]+) ")
ours = theirs = 0
for f in sorted(glob.glob(os.path.join(d, "crash-*")) + glob.glob(os.path.join(d, "leak-*"))):
    try:
        r = subprocess.run([exe, "-timeout=20", f], capture_output=True, text=True, env=env, timeout=120)
        out = r.stdout + r.stderr
    except subprocess.TimeoutExpired:
        print("HDF5 (hang on replay): %s" % os.path.basename(f))
        theirs += 1
        continue
    if r.returncode == 0:
        print("not reproduced: %s" % os.path.basename(f))
        continue
    m = re.search(r"(ERROR: \w+Sanitizer: [^\n]*|runtime error: [^\n]*)", out)
    what = m.group(1)[:110] if m else "exit %d" % r.returncode
    frames = re.findall(r"^\s+#\d+ 0x[0-9a-f]+ (.*)$", out[m.start():] if m else out, re.M)
    first = next((x for x in frames if not RUNTIME.search("in " + x if not x.startswith("in ") else x)), "")
    if "libhdf5" in first and "LeakSanitizer" not in what:
        theirs += 1
        print("libhdf5: %s: %s | %s" % (os.path.basename(f), what, first[:100]))
    else:
        ours += 1
        print("OURS: %s: %s | %s" % (os.path.basename(f), what, first[:160]))
print("triage: %d finding(s) in libhdf5 (upstream, ignored), %d in loupe" % (theirs, ours))
sys.exit(1 if ours else 0)
