"""reliability_sigint: Ctrl-C (SIGINT) once in the middle of an epoch: the step
finishes, last.safetensors is written, exit 130; --resume then ends with the
uninterrupted run's exact weights, history and predictions; SIGTERM the same, with
exit 143. Twice: exit 130 at once, saying the save was dropped, and the run directory
still resumes to the same result.

Where the signal lands does not depend on the machine's speed: the test holds a
file lease (fcntl F_SETLEASE) on every training image, so loupe's open() of one
waits until the test lets it go. Epochs are 3 steps over half the images
(--steps-per-epoch 3, 6 batches per pass), so epoch 2 reads images never read
before (the loader caches what it has read). The first image the loader opens
after "Epoch 2/" was printed belongs to the batch of epoch 2's first or second
step; the test sends SIGINT, waits until loupe has taken it, then lets the image
go: the stop comes after step 1 or 2 of 3 on any CPU.

usage: test_sigint.py LOUPE WORKDIR   (LOUPE: loupe-testhooks, for its LOUPE_TEST_* variables)"""
import atexit, fcntl, os, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Checks, breaking, checkpoint_problems, fresh, history_problems, lease, lease_capable, leftover_temps,
                    make_dataset, read_tensors, release, same_tensors, train_args)

# the lease only tells the holder by SIGIO, whose default action ends the process
signal.signal(signal.SIGIO, lambda *_: None)
LOUPE, WORK = sys.argv[1], fresh(sys.argv[2])
c = Checks("reliability_sigint")
BASE = lease_capable(WORK, "loupe-sigint-")
DATA = make_dataset(BASE, per_class=(12, 2, 2))  # 24 training images: 6 batches of 4
TEST = os.path.join(DATA, "test")
EPOCHS = 3
HALF = ("--steps-per-epoch", "3")

REF = os.path.join(WORK, "ref")
r = subprocess.run([LOUPE, *train_args(DATA, REF, EPOCHS, *HALF)], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit("FAIL: uninterrupted run exited %d: %s" % (r.returncode, r.stderr))
ref_last, _ = read_tensors(os.path.join(REF, "checkpoints", "last.safetensors"))
ref_files = {n: open(os.path.join(REF, n), "rb").read() for n in ("history.csv", "valid_predictions.csv")}


class Gate:
    """Leases on every training image. The dataset scan opens each image first:
    a leased copy then takes its place before the scan may go on, so that the
    loader's later open() of the same path waits too."""

    def __init__(self, spare):
        fresh(spare)
        self.scan, self.load = {}, {}  # fd -> path
        self.copy_fd = {}
        train = os.path.join(DATA, "train")
        for i, path in enumerate(sorted(os.path.join(dp, f) for dp, _, fs in os.walk(train) for f in fs)):
            copy = os.path.join(spare, "%d" % i)
            shutil.copyfile(path, copy)
            self.copy_fd[path] = (copy, lease(copy))
            self.scan[lease(path)] = path

    def opened(self):
        """Lets scan opens go on; returns the (fd, path) of the images the loader opens."""
        for fd, path in list(self.scan.items()):
            if breaking(fd):
                copy, cfd = self.copy_fd.pop(path)
                os.rename(copy, path)
                self.load[cfd] = path
                release(fd)
                del self.scan[fd]
        return [(fd, path) for fd, path in self.load.items() if breaking(fd)]

    def let_go(self, fd):
        release(fd)
        del self.load[fd]

    def close(self):
        for fd in list(self.scan) + list(self.load) + [cfd for _, cfd in self.copy_fd.values()]:
            release(fd)
        self.scan, self.load, self.copy_fd = {}, {}, {}


def taken(pid, sig):
    """True once no thread of pid has sig pending: its handler has run or runs now
    (the thread that took it returns to user code through the handler)."""
    try:
        status = open("/proc/%d/status" % pid).read()
    except OSError:
        return True
    pend = 0
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            pend |= int(line.split()[1], 16)
    return not pend & (1 << (sig - 1))


def run_gated(run_dir, env=None, tick=None, sig=signal.SIGINT):
    """Trains with every image gated; one SIGINT (or sig) inside epoch 2 as the module
    docstring says. tick(p, out) runs on each turn of the loop (out: stdout so far).
    Returns (exit code, stdout, stderr, how the signal was placed)."""
    gate = Gate(os.path.join(os.path.dirname(DATA), "spare"))
    err_path = run_dir + ".stderr"
    with open(err_path, "w") as err_file:
        p = subprocess.Popen([LOUPE, *train_args(DATA, run_dir, EPOCHS, *HALF)], stdout=subprocess.PIPE,
                             stderr=err_file, env=env)
    os.set_blocking(p.stdout.fileno(), False)
    out, placed, deadline = b"", None, time.monotonic() + 120  # a hung run, not a speed limit

    def drain():
        nonlocal out
        while True:
            try:
                b = os.read(p.stdout.fileno(), 65536)
            except BlockingIOError:
                return
            if not b:
                return
            out += b

    try:
        while p.poll() is None and time.monotonic() < deadline:
            drain()
            for fd, path in gate.opened():
                drain()  # "Epoch 2/" is printed before epoch 2 asks for a batch: it is in the pipe by now
                if placed is None and b"\nEpoch 2/" in out:
                    p.send_signal(sig)
                    while not taken(p.pid, sig) and p.poll() is None:
                        time.sleep(0.001)
                    placed = "while the loader opened %s" % os.path.relpath(path, DATA)
                gate.let_go(fd)
            if tick:
                tick(p, out.decode(errors="replace"))
            time.sleep(0.001)
        if p.poll() is None:
            p.kill()
    finally:
        gate.close()
    p.wait()
    drain()
    return p.returncode, out.decode(errors="replace"), open(err_path).read(), placed


def resume_and_compare(run_dir, what):
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, EPOCHS, *HALF, "--resume")], capture_output=True, text=True)
    if not c.check(r.returncode == 0, "%s: --resume exited %d: %s" % (what, r.returncode, r.stderr[-400:])):
        return r.stdout
    last, _ = read_tensors(os.path.join(run_dir, "checkpoints", "last.safetensors"))
    c.check(same_tensors(last, ref_last), "%s: weights after --resume differ from the uninterrupted run's" % what)
    for n, ref in ref_files.items():
        c.check(open(os.path.join(run_dir, n), "rb").read() == ref, "%s: %s differs from the uninterrupted run's" % (what, n))
    c.check(not leftover_temps(run_dir), "%s: temporary files left: %s" % (what, leftover_temps(run_dir)))
    return r.stdout


# 1. one Ctrl-C in the middle of epoch 2
what = "Ctrl-C once"
run_dir = os.path.join(WORK, "once")
rc, out, err, placed = run_gated(run_dir)
c.check(placed is not None, "%s: the loader opened no image after 'Epoch 2/' (no SIGINT sent): %r" % (what, out[-500:]))
c.check(rc == 130, "%s: exit %d, expected 130 (stdout: %r, stderr: %s)" % (what, rc, out[-300:], err[-300:]))
c.check("--resume" in err, "%s: the message does not say how to continue: %r" % (what, err))
stopped = [l for l in out.splitlines() if l.startswith("Interrupted: saving")]
c.check(len(stopped) == 1 and "(epoch 2, step " in stopped[0],
        "%s: no 'Interrupted: saving ... (epoch 2, step N of 3)' line: %r" % (what, out[-500:]))
last = os.path.join(run_dir, "checkpoints", "last.safetensors")
if c.check(os.path.exists(last), "%s: no last.safetensors" % what):
    for pr in checkpoint_problems(LOUPE, last, TEST):
        c.check(False, "%s: %s" % (what, pr))
    probs, rows = history_problems(os.path.join(run_dir, "history.csv"))
    c.check(not probs, "%s: history.csv: %s" % (what, probs))
    c.check(not os.path.exists(os.path.join(run_dir, "lock")), "%s: lock left behind" % what)
    _, meta = read_tensors(last)
    c.check(int(meta["epoch"]) == 1 and len(rows) == 1,
            "%s: mid-epoch-2 checkpoint says epoch %s, history has %d rows" % (what, meta["epoch"], len(rows)))
    c.check('"step_in_epoch":0' not in meta.get("train_state", ""), "%s: train_state does not record the step" % what)
    if stopped:
        print("SIGINT sent %s; %s" % (placed, stopped[0]))
    resumed = resume_and_compare(run_dir, what)
    c.check("Resuming from" in resumed and ", step " in resumed, "%s: resume does not say it continues mid-epoch" % what)

# 1b. SIGTERM (kill, timeout, job schedulers) does what Ctrl-C does, with exit 143 (128 + 15)
what = "SIGTERM once"
run_dir = os.path.join(WORK, "term")
rc, out, err, placed = run_gated(run_dir, sig=signal.SIGTERM)
c.check(placed is not None, "%s: the loader opened no image after 'Epoch 2/' (no SIGTERM sent): %r" % (what, out[-500:]))
c.check(rc == 143, "%s: exit %d, expected 143 (stderr: %s)" % (what, rc, err[-300:]))
c.check(any(l.startswith("Interrupted: saving") for l in out.splitlines()), "%s: no 'Interrupted: saving' line" % what)
last = os.path.join(run_dir, "checkpoints", "last.safetensors")
if c.check(os.path.exists(last), "%s: no last.safetensors" % what):
    # --epochs below the epoch it stopped in: nothing runs, and the message says what to pass
    before = open(last, "rb").read()
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, 1, *HALF, "--resume")], capture_output=True, text=True)
    c.check(r.returncode == 0 and "Nothing to train" in r.stdout and "--epochs 2 or more" in r.stdout,
            "%s: --resume --epochs 1 of a run stopped in epoch 2 (exit %d) does not say to pass --epochs 2: %r" %
            (what, r.returncode, r.stdout[-400:] + r.stderr[-300:]))
    c.check(open(last, "rb").read() == before, "%s: --resume --epochs 1 changed last.safetensors" % what)
    resume_and_compare(run_dir, what)

# 2. a second Ctrl-C while the first one's checkpoint is being written (slowed
#    by the test hook to 4 KiB chunks every 150 ms): exit 130 at once; the
#    previous last.safetensors stays; the directory resumes to the same result.
run_dir = os.path.join(WORK, "twice")
second = []


def second_sigint(p, out):
    tmp = os.path.join(run_dir, "checkpoints", "last.safetensors.tmp.%d" % p.pid)
    if not second and "Interrupted: saving" in out and os.path.exists(tmp):
        p.send_signal(signal.SIGINT)  # the write takes >= 4 x 150 ms
        second.append(1)


rc, out, err, placed = run_gated(run_dir, dict(os.environ, LOUPE_TEST_WRITE_DELAY_MS="150"), second_sigint)
c.check(placed is not None and second, "Ctrl-C twice: never saw the interrupted save start: %r" % out[-500:])
c.check(rc == 130, "Ctrl-C twice: exit %d, expected 130" % rc)
c.check("interrupted again" in err and "without saving" in err, "Ctrl-C twice: no word that the save was dropped: %r" % err[-300:])
last = os.path.join(run_dir, "checkpoints", "last.safetensors")
if c.check(os.path.exists(last), "Ctrl-C twice: the epoch-1 last.safetensors is gone"):
    for pr in checkpoint_problems(LOUPE, last, TEST):
        c.check(False, "Ctrl-C twice: %s" % pr)
    _, meta = read_tensors(last)
    c.check('"step_in_epoch":0' in meta.get("train_state", ""),
            "Ctrl-C twice: last.safetensors is not the end-of-epoch-1 one (the cut save replaced it?)")
c.check(bool(leftover_temps(run_dir)), "Ctrl-C twice: no temporary left: it finished the save instead of exiting at once")
resume_and_compare(run_dir, "Ctrl-C twice")
c.done()
