"""reliability_hooks_off: the fault-injection switches of the reliability tests
reach the library only through the test program loupe-testhooks; loupe and
libloupe.so never read them.

  1. loupe and libloupe.so do not hold the variables' names at all, while
     loupe-testhooks does (so the search itself can find them);
  2. `loupe train` with every LOUPE_TEST_* variable set to fail or poison
     (writes fail from the first byte, every batch's loss NaN with --on-nan
     skip) trains normally: exit 0, checkpoints written, no batch skipped;
  3. loupe-testhooks, same command and variables, fails with the injected
     "No space left on device", so step 2 would have seen the hooks if loupe
     read them.

usage: test_hooks_off.py LOUPE LOUPE_TESTHOOKS LIBLOUPE_SO WORKDIR"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, fresh, make_dataset, run, train_args  # noqa: E402

LOUPE, TESTHOOKS, LIBSO, WORK = sys.argv[1], sys.argv[2], sys.argv[3], fresh(sys.argv[4])
c = Checks("reliability_hooks_off")
NAMES = [b"LOUPE_TEST_WRITE_DELAY_MS", b"LOUPE_TEST_FAIL_WRITE_AFTER", b"LOUPE_TEST_FAIL_WRITE_MATCH",
         b"LOUPE_TEST_NAN_INPUT", b"LOUPE_TEST_NAN_LOSS", b"LOUPE_TEST_NAN_GRAD", b"LOUPE_H5_INPROCESS"]

for path, expect in ((LOUPE, False), (LIBSO, False), (TESTHOOKS, True)):
    data = open(path, "rb").read()
    found = [n.decode() for n in NAMES if n in data]
    if expect:
        c.check(len(found) == len(NAMES), "%s: misses %s" % (path, sorted(set(n.decode() for n in NAMES) - set(found))))
    else:
        c.check(not found, "%s reads test switches: %s" % (path, found))

DATA = make_dataset(WORK)
HOOKED = dict(os.environ, LOUPE_TEST_FAIL_WRITE_AFTER="0", LOUPE_TEST_NAN_LOSS="_", LOUPE_TEST_NAN_GRAD="_",
              LOUPE_TEST_NAN_INPUT="_")
HOOKED.pop("LOUPE_TEST_FAIL_WRITE_MATCH", None)
HOOKED.pop("LOUPE_TEST_WRITE_DELAY_MS", None)

plain = os.path.join(WORK, "plain")
r = run(LOUPE, train_args(DATA, plain, 1, "--on-nan", "skip"), env=HOOKED)
if c.check(r.returncode == 0, "loupe with LOUPE_TEST_* set exited %d: %s" % (r.returncode, r.stderr[-300:])):
    c.check(os.path.exists(os.path.join(plain, "checkpoints", "last.safetensors")), "loupe wrote no last.safetensors")
    c.check("skipped" not in r.stdout + r.stderr, "loupe skipped batches: %s" % (r.stdout + r.stderr)[-300:])
    info = json.load(open(os.path.join(plain, "run.json")))
    c.check(info.get("skipped_nan_batches") == 0, "run.json skipped_nan_batches = %r" % info.get("skipped_nan_batches"))

hooked = os.path.join(WORK, "hooked")
r = run(TESTHOOKS, train_args(DATA, hooked, 1, "--on-nan", "skip"), env=HOOKED)
c.check(r.returncode == 1 and "No space left on device" in r.stderr,
        "loupe-testhooks with LOUPE_TEST_FAIL_WRITE_AFTER=0: exit %d, %r (expected 1 and ENOSPC)"
        % (r.returncode, r.stderr[-300:]))
c.done()
