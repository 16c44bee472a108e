"""reliability_sigint: Ctrl-C (SIGINT) once in the middle of an epoch: the step
finishes, last.safetensors is written, exit 130; --resume then ends with the
uninterrupted run's exact weights, history and predictions. Twice: exit 130 at
once, and the run directory still resumes to the same result.

usage: test_sigint.py LOUPE WORKDIR"""
import os, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Checks, checkpoint_problems, fresh, history_problems, leftover_temps, make_dataset,
                    read_tensors, same_tensors, train_args)

LOUPE, WORK = sys.argv[1], fresh(sys.argv[2])
c = Checks("reliability_sigint")
DATA = make_dataset(WORK, per_class=(12, 2, 2))  # 6 steps of batch 4 per epoch
TEST = os.path.join(DATA, "test")
EPOCHS = 3

REF = os.path.join(WORK, "ref")
r = subprocess.run([LOUPE, *train_args(DATA, REF, EPOCHS)], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit("FAIL: uninterrupted run exited %d: %s" % (r.returncode, r.stderr))
ref_last, _ = read_tensors(os.path.join(REF, "checkpoints", "last.safetensors"))
ref_files = {n: open(os.path.join(REF, n), "rb").read() for n in ("history.csv", "valid_predictions.csv")}


def interrupt(run_dir, times, wait_line="Epoch 2/"):
    """Starts a run, waits for wait_line on stdout, sends SIGINT `times` times."""
    p = subprocess.Popen([LOUPE, *train_args(DATA, run_dir, EPOCHS)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, bufsize=1)
    out = []
    for line in p.stdout:
        out.append(line)
        if line.startswith(wait_line):
            time.sleep(0.15)  # into the epoch's first steps (a step takes longer than this)
            for i in range(times):
                p.send_signal(signal.SIGINT)
                time.sleep(0.02)  # not merged with the next one
            break
    rest, err = p.communicate(timeout=120)
    return p.returncode, "".join(out) + rest, err


def resume_and_compare(run_dir, what):
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, EPOCHS, "--resume")], capture_output=True, text=True)
    if not c.check(r.returncode == 0, "%s: --resume exited %d: %s" % (what, r.returncode, r.stderr[-400:])):
        return r.stdout
    last, _ = read_tensors(os.path.join(run_dir, "checkpoints", "last.safetensors"))
    c.check(same_tensors(last, ref_last), "%s: weights after --resume differ from the uninterrupted run's" % what)
    for n, ref in ref_files.items():
        c.check(open(os.path.join(run_dir, n), "rb").read() == ref, "%s: %s differs from the uninterrupted run's" % (what, n))
    c.check(not leftover_temps(run_dir), "%s: temporary files left: %s" % (what, leftover_temps(run_dir)))
    return r.stdout


# 1. one Ctrl-C in the middle of epoch 2 (retry if the signal landed on an epoch's last step)
mid = False
for attempt in range(4):
    run_dir = os.path.join(WORK, "once%d" % attempt)
    rc, out, err = interrupt(run_dir, 1)
    what = "Ctrl-C once (attempt %d)" % attempt
    c.check(rc == 130, "%s: exit %d, expected 130 (stderr: %s)" % (what, rc, err[-300:]))
    c.check("--resume" in err, "%s: the message does not say how to continue: %r" % (what, err))
    last = os.path.join(run_dir, "checkpoints", "last.safetensors")
    if not c.check(os.path.exists(last), "%s: no last.safetensors" % what):
        continue
    for pr in checkpoint_problems(LOUPE, last, TEST):
        c.check(False, "%s: %s" % (what, pr))
    probs, rows = history_problems(os.path.join(run_dir, "history.csv"))
    c.check(not probs, "%s: history.csv: %s" % (what, probs))
    c.check(not os.path.exists(os.path.join(run_dir, "lock")), "%s: lock left behind" % what)
    mid = "Interrupted: saving" in out
    if mid:
        _, meta = read_tensors(last)
        c.check(int(meta["epoch"]) == 1 and len(rows) == 1,
                "%s: mid-epoch-2 checkpoint says epoch %s, history has %d rows" % (what, meta["epoch"], len(rows)))
        c.check('"step_in_epoch":0' not in meta.get("train_state", ""), "%s: train_state does not record the step" % what)
        print("interrupted mid-epoch: " + [l for l in out.splitlines() if l.startswith("Interrupted")][0])
    resumed = resume_and_compare(run_dir, what)
    if mid:
        c.check("Resuming from" in resumed and ", step " in resumed, "%s: resume does not say it continues mid-epoch" % what)
        break
c.check(mid, "no SIGINT landed in the middle of an epoch in 4 attempts")

# 2. a second Ctrl-C while the first one's checkpoint is being written (slowed
#    by the test hook to 4 KiB chunks every 150 ms): exit 130 at once; the
#    previous last.safetensors stays; the directory resumes to the same result.
run_dir = os.path.join(WORK, "twice")
env = dict(os.environ, LOUPE_TEST_WRITE_DELAY_MS="150")
p = subprocess.Popen([LOUPE, *train_args(DATA, run_dir, EPOCHS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True, bufsize=1, env=env)
out, sent = [], 0
for line in p.stdout:
    out.append(line)
    if line.startswith("Epoch 2/") and sent == 0:
        time.sleep(0.15)
        p.send_signal(signal.SIGINT)
        sent = 1
    if line.startswith("Interrupted: saving") and sent == 1:
        tmp = os.path.join(run_dir, "checkpoints", "last.safetensors.tmp.%d" % p.pid)
        while not os.path.exists(tmp) and p.poll() is None:
            time.sleep(0.001)
        p.send_signal(signal.SIGINT)  # the write takes >= 4 x 150 ms
        sent = 2
        break
rest, err = p.communicate(timeout=120)
c.check(sent == 2, "Ctrl-C twice: never saw the interrupted save start: %r" % "".join(out)[-500:])
c.check(p.returncode == 130, "Ctrl-C twice: exit %d, expected 130" % p.returncode)
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
