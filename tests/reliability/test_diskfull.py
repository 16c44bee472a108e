"""reliability_diskfull: the disk fills up during training.

Part A (always): injected write failures through the test hook of
lp_atomic_write, set by loupe-testhooks (LOUPE_TEST_FAIL_WRITE_AFTER=N
bytes, LOUPE_TEST_FAIL_WRITE_MATCH=file): ENOSPC in the middle of epoch 2's
last.safetensors, of best.safetensors, and of the very first writes
(run.json, history.csv header).
Part B: the run directory on a real 4 MiB tmpfs that the test fills after
epoch 1 (needs mount: root, or an unprivileged user namespace via `unshare -rm`;
skipped with a message when neither works).

Each time: exit 1, one message naming the file and "No space left on device",
the previous checkpoint still loads (and is epoch 1's), no temporary left, no
lock left; once space is back, --resume ends with the uninterrupted run's
exact weights and history.

usage: test_diskfull.py LOUPE WORKDIR   (LOUPE: loupe-testhooks, for its LOUPE_TEST_* variables)"""
import os, shutil, signal, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Checks, checkpoint_problems, fresh, history_problems, leftover_temps, make_dataset,
                    read_tensors, same_tensors, train_args)

LOUPE, WORK = sys.argv[1], sys.argv[2]
IN_NS = len(sys.argv) > 3 and sys.argv[3] == "--in-namespace"
if not IN_NS:
    fresh(WORK)
c = Checks("reliability_diskfull")
EPOCHS = 3
DATA = os.path.join(WORK, "data") if IN_NS else make_dataset(WORK)
TEST = os.path.join(DATA, "test")
REF = os.path.join(WORK, "ref")
if not IN_NS:
    r = subprocess.run([LOUPE, *train_args(DATA, REF, EPOCHS)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("FAIL: uninterrupted run exited %d: %s" % (r.returncode, r.stderr))
ref_last, _ = read_tensors(os.path.join(REF, "checkpoints", "last.safetensors"))
ref_hist = open(os.path.join(REF, "history.csv"), "rb").read()
LAST_SIZE = os.path.getsize(os.path.join(REF, "checkpoints", "last.safetensors"))
BEST_SIZE = os.path.getsize(os.path.join(REF, "checkpoints", "best.safetensors"))


def check_failed_run(run_dir, r, what, fname, prev_epoch):
    c.check(r.returncode == 1, "%s: exit %d, expected 1" % (what, r.returncode))
    err = r.stderr.strip()
    c.check(fname in err and "No space left on device" in err,
            "%s: the message does not name %s and the cause: %r" % (what, fname, err))
    print("%s -> %s" % (what, err.splitlines()[-1] if err else "(no message)"))
    c.check(not leftover_temps(run_dir), "%s: temporaries left: %s" % (what, leftover_temps(run_dir)))
    c.check(not os.path.exists(os.path.join(run_dir, "lock")), "%s: lock left behind" % what)
    last = os.path.join(run_dir, "checkpoints", "last.safetensors")
    if prev_epoch is None:
        return
    if c.check(os.path.exists(last), "%s: the previous last.safetensors is gone" % what):
        for pr in checkpoint_problems(LOUPE, last, TEST):
            c.check(False, "%s: %s" % (what, pr))
        _, meta = read_tensors(last)
        c.check(meta.get("epoch") == str(prev_epoch), "%s: last.safetensors is from epoch %s, expected %d"
                % (what, meta.get("epoch"), prev_epoch))
    probs, _ = history_problems(os.path.join(run_dir, "history.csv"))
    c.check(not probs, "%s: history.csv: %s" % (what, probs))


def resume_same(run_dir, what):
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, EPOCHS, "--resume")], capture_output=True, text=True)
    if not c.check(r.returncode == 0, "%s: --resume exited %d: %s" % (what, r.returncode, r.stderr[-300:])):
        return
    last, _ = read_tensors(os.path.join(run_dir, "checkpoints", "last.safetensors"))
    c.check(same_tensors(last, ref_last), "%s: weights after --resume differ from the uninterrupted run's" % what)
    c.check(open(os.path.join(run_dir, "history.csv"), "rb").read() == ref_hist, "%s: history.csv differs" % what)


def injected():
    # (file to fail, bytes that may still be written to it, epoch of the checkpoint that must survive)
    cases = [("last.safetensors", LAST_SIZE + LAST_SIZE // 3, 1),  # epoch 2's last fails a third of the way in
             ("best.safetensors", BEST_SIZE + 100, 1),  # the 2nd best fails (if epoch 2 improves; else the 3rd)
             ("run.json", 0, None),  # the very first write of a run
             ("history.csv", 0, None)]
    for i, (fname, after, prev) in enumerate(cases):
        run_dir = os.path.join(WORK, "inj%d" % i)
        env = dict(os.environ, LOUPE_TEST_FAIL_WRITE_AFTER=str(after), LOUPE_TEST_FAIL_WRITE_MATCH=fname)
        r = subprocess.run([LOUPE, *train_args(DATA, run_dir, EPOCHS)], capture_output=True, text=True, env=env)
        what = "injected ENOSPC in %s after %d bytes" % (fname, after)
        if fname == "best.safetensors" and r.returncode == 0:
            print("%s: best improved only once, nothing to fail" % what)
            continue
        check_failed_run(run_dir, r, what, fname, prev)
        if fname == "best.safetensors":
            b = os.path.join(run_dir, "checkpoints", "best.safetensors")
            for pr in checkpoint_problems(LOUPE, b, TEST):
                c.check(False, "%s: %s" % (what, pr))
        resume_same(run_dir, what)


def fill(path):
    """Writes until the file system is full; returns bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    n += f.write(b"\0" * chunk)
            except OSError:
                pass
    return n


def tmpfs():
    mnt = os.path.join(WORK, "mnt")
    os.makedirs(mnt, exist_ok=True)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], capture_output=True, text=True)
    if m.returncode != 0:
        return m.stderr.strip() or "mount failed"
    try:
        run_dir = os.path.join(mnt, "run")
        filler = os.path.join(mnt, "filler")
        p = subprocess.Popen([LOUPE, *train_args(DATA, run_dir, EPOCHS)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, bufsize=1)
        filled = 0
        for line in p.stdout:
            if line.startswith("Epoch 2/"):  # epoch 1's checkpoints are written
                p.send_signal(signal.SIGSTOP)
                filled = fill(filler)
                p.send_signal(signal.SIGCONT)
                break
        out, err = p.communicate(timeout=120)
        r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        what = "tmpfs full after epoch 1 (filler %d bytes)" % filled
        # The first file that needs a new page fails: a checkpoint, or a log
        name = next((n for n in ("last.safetensors", "best.safetensors", "history.csv", "valid_predictions.csv",
                                 "tfevents") if n in err), "last.safetensors")
        check_failed_run(run_dir, r, what, name, 1)
        os.unlink(filler)
        resume_same(run_dir, what + ", then space freed")
    finally:
        subprocess.run(["umount", "-l", mnt])
    return None


if not IN_NS:
    injected()
why = tmpfs()
if why and not IN_NS and shutil.which("unshare"):
    # not root: an unprivileged user+mount namespace may still mount a tmpfs
    r = subprocess.run(["unshare", "-rm", sys.executable, __file__, LOUPE, WORK, "--in-namespace"])
    if r.returncode == 0:
        why = None
    elif r.returncode != 77:
        c.check(False, "tmpfs part in a user namespace failed")
        why = None
if why:
    print("SKIPPED the tmpfs part: cannot mount a tmpfs here (%s); the injected-failure part ran" % why)
    if IN_NS:
        sys.exit(77)
c.done()
