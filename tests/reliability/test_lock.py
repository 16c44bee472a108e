"""reliability_lock: one `loupe train` per run directory.

1. a second `loupe train` (with and without --resume) on a RUN in use refuses
   at once: exit 1, message naming the owner's pid; the first run is
   unaffected (ends with the same weights as a run alone);
2. a stale lock (kill -9 of the owner) is taken over by --resume, also a lock
   file whose content is not a pid (crash between create and write);
3. races: several `loupe train` started together on one fresh RUN: exactly one
   trains, every other one refuses (never two writers).

The first run of 1. and 2. is held while it owns the lock, whatever the machine's speed:
the test leases one training image (fcntl F_SETLEASE), whose open() by the dataset scan,
after the lock is taken, waits until the test lets go.

usage: test_lock.py LOUPE WORKDIR   (LOUPE: loupe-testhooks, for its LOUPE_TEST_* variables)"""
import glob, os, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, fresh, lease, lease_capable, make_dataset, read_tensors, release, same_tensors, train_args

# the lease only tells the holder by SIGIO, whose default action ends the process
signal.signal(signal.SIGIO, lambda *_: None)
LOUPE, WORK = sys.argv[1], fresh(sys.argv[2])
c = Checks("reliability_lock")
DATA = make_dataset(lease_capable(WORK, "loupe-lock-"))
GATE = sorted(glob.glob(os.path.join(DATA, "train", "*", "*")))[0]  # the image a held run waits for
EPOCHS = 3
REF = os.path.join(WORK, "ref")
r = subprocess.run([LOUPE, *train_args(DATA, REF, EPOCHS)], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit("FAIL: reference run exited %d: %s" % (r.returncode, r.stderr))
ref_last, _ = read_tensors(os.path.join(REF, "checkpoints", "last.safetensors"))
ref_hist = open(os.path.join(REF, "history.csv"), "rb").read()


def wait_for_lock(run_dir, p):
    lock = os.path.join(run_dir, "lock")
    while p.poll() is None:
        try:
            if open(lock).read().strip() == str(p.pid):
                return True
        except OSError:
            pass
        time.sleep(0.002)
    return False


# 1. second run refuses
run_dir = os.path.join(WORK, "busy")
gate = lease(GATE)
p = subprocess.Popen([LOUPE, *train_args(DATA, run_dir, EPOCHS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
if c.check(wait_for_lock(run_dir, p), "first run: never saw RUN/lock with its pid"):
    for extra in ([], ["--resume"]):
        r = subprocess.run([LOUPE, *train_args(DATA, run_dir, EPOCHS, *extra)], capture_output=True, text=True)
        what = "second run%s" % (" with --resume" if extra else "")
        err = r.stderr.strip()
        print("%s -> exit %d: %s" % (what, r.returncode, err))
        c.check(r.returncode == 1, "%s: exit %d, expected 1" % (what, r.returncode))
        c.check("in use" in err and str(p.pid) in err, "%s: message does not name the owner pid %d: %r" % (what, p.pid, err))
release(gate)
out, err = p.communicate(timeout=300)
c.check(p.returncode == 0, "first run: exit %d: %s" % (p.returncode, err.decode()[-300:]))
if p.returncode == 0:
    last, _ = read_tensors(os.path.join(run_dir, "checkpoints", "last.safetensors"))
    c.check(same_tensors(last, ref_last), "first run: weights differ from a run alone")
    c.check(open(os.path.join(run_dir, "history.csv"), "rb").read() == ref_hist, "first run: history differs")
c.check(not os.path.exists(os.path.join(run_dir, "lock")), "lock left after the run ended")

# 2. stale locks
run_dir = os.path.join(WORK, "stale")
gate = lease(GATE)
p = subprocess.Popen([LOUPE, *train_args(DATA, run_dir, EPOCHS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
held = wait_for_lock(run_dir, p)
if held:
    p.kill()
p.wait()
release(gate)
if c.check(held, "stale: never saw the lock"):
    c.check(os.path.exists(os.path.join(run_dir, "lock")), "kill -9 left no lock (nothing to take over)")
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, EPOCHS, "--resume")], capture_output=True, text=True)
    c.check(r.returncode == 0, "stale lock of a killed run: --resume exited %d: %s" % (r.returncode, r.stderr[-300:]))
    if r.returncode == 0:
        last, _ = read_tensors(os.path.join(run_dir, "checkpoints", "last.safetensors"))
        c.check(same_tensors(last, ref_last), "stale: weights after taking over differ")
for content in ("", "garbage\n", "999999999\n"):
    run_dir = fresh(os.path.join(WORK, "junk"))
    open(os.path.join(run_dir, "lock"), "w").write(content)
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, 1)], capture_output=True, text=True)
    c.check(r.returncode == 0, "lock file holding %r: exit %d: %s" % (content, r.returncode, r.stderr[-300:]))

# 3. simultaneous starts
for rnd in range(5):
    run_dir = os.path.join(WORK, "race%d" % rnd)
    ps = [subprocess.Popen([LOUPE, *train_args(DATA, run_dir, 1, "--quiet")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True) for _ in range(6)]
    res = [(q.wait(timeout=300), q.stderr.read()) for q in ps]
    ok = [rc for rc, _ in res if rc == 0]
    refused = [e for rc, e in res if rc == 1 and "in use" in e]
    others = [(rc, e.strip()[-200:]) for rc, e in res if rc != 0 and not (rc == 1 and "in use" in e)]
    # A starter that came after the winner finished sees a finished run: "already holds a run" (exit 2).
    late = [e for rc, e in others if rc == 2 and "already holds a run" in e]
    c.check(len(ok) == 1, "race %d: %d runs trained at once (exit codes %s)" % (rnd, len(ok), [rc for rc, _ in res]))
    c.check(len(refused) + len(late) == 5, "race %d: unexpected outcomes %s" % (rnd, [o for o in others if o[1] not in late]))
c.done()
