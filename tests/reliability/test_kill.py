"""reliability_kill: kill -9 `loupe train` at random moments and inside
checkpoint writes; after every kill the run directory must be usable, and
--resume must finish with the uninterrupted run's exact weights.

usage: test_kill.py LOUPE WORKDIR [KILLS]   (KILLS >= 20, default 24; LOUPE: loupe-testhooks,
for LOUPE_TEST_WRITE_DELAY_MS)
The random choices come from LOUPE_KILL_SEED (printed) so a failure replays.

Each trial:
  1. start a fresh run; kill -9 it either at a random time or while a
     checkpoint is being written (LOUPE_TEST_WRITE_DELAY_MS slows the write to
     4 KiB chunks; the test waits for checkpoints/*.tmp.<pid> to appear);
  2. check: history.csv holds only complete rows, equal to the uninterrupted
     run's first rows; last.safetensors and best.safetensors (if present) parse
     and `loupe evaluate` runs on them; last's epoch has its history row;
  3. every third trial: --resume and kill again at a random time, check again;
  4. --resume to the end: exit 0; last.safetensors (weights + optimizer state),
     best.safetensors, history.csv and valid_predictions.csv bit-identical to
     the uninterrupted run's; no lock and no temporary files left behind.
Then one deterministic case: torn last lines in history.csv and
valid_predictions.csv (what a crash while appending leaves) are dropped by
--resume, which again ends bit-identical to the uninterrupted run.
"""
import os, random, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Checks, checkpoint_problems, fresh, history_problems, leftover_temps, make_dataset,
                    read_tensors, same_tensors, train_args)

LOUPE, WORK = sys.argv[1], fresh(sys.argv[2])
KILLS = int(sys.argv[3]) if len(sys.argv) > 3 else 24
SEED = int(os.environ.get("LOUPE_KILL_SEED", random.SystemRandom().randrange(1 << 30)))
print("LOUPE_KILL_SEED=%d" % SEED, flush=True)
rng = random.Random(SEED)
EPOCHS = 4
DELAY_MS = 25
c = Checks("reliability_kill")
DATA = make_dataset(WORK)
TEST = os.path.join(DATA, "test")

# The uninterrupted run everything is compared with.
REF = os.path.join(WORK, "ref")
t0 = time.monotonic()
r = subprocess.run([LOUPE, *train_args(DATA, REF, EPOCHS, "--quiet")], capture_output=True, text=True)
T_REF = time.monotonic() - t0
if r.returncode != 0:
    print(r.stdout[-2000:], r.stderr[-2000:])
    sys.exit("FAIL: the uninterrupted run exited %d" % r.returncode)
ref_last, _ = read_tensors(os.path.join(REF, "checkpoints", "last.safetensors"))
ref_best, _ = read_tensors(os.path.join(REF, "checkpoints", "best.safetensors"))
ref_hist = open(os.path.join(REF, "history.csv"), "rb").read()
ref_pred = open(os.path.join(REF, "valid_predictions.csv"), "rb").read()
_, ref_rows = history_problems(os.path.join(REF, "history.csv"))
print("uninterrupted run: %.2f s, %d history rows" % (T_REF, len(ref_rows)), flush=True)


def start(run_dir, resume, delay_ms=0):
    args = train_args(DATA, run_dir, EPOCHS, "--quiet") + (["--resume"] if resume else [])
    env = dict(os.environ)
    env.pop("LOUPE_TEST_WRITE_DELAY_MS", None)
    if delay_ms:
        env["LOUPE_TEST_WRITE_DELAY_MS"] = str(delay_ms)
    err = open(os.path.join(run_dir + ".stderr"), "ab")
    return subprocess.Popen([LOUPE, *args], stdout=subprocess.DEVNULL, stderr=err, env=env)


def kill_at_random_time(p):
    deadline = time.monotonic() + rng.uniform(0.02, 0.95 * T_REF)
    while time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.002)
    if p.poll() is not None:
        return False
    p.kill()
    p.wait()
    return True


def kill_inside_write(p, ckpt_dir, target, nth):
    """Waits for the nth appearance of checkpoints/<target>.tmp.<pid>, then
    kills at a random moment of the (slowed) write. True when the process died
    with the temporary still there, i.e. inside the write."""
    tmp = os.path.join(ckpt_dir, "%s.tmp.%d" % (target, p.pid))
    seen, present = 0, False
    while p.poll() is None:
        now = os.path.exists(tmp)
        if now and not present:
            seen += 1
            if seen == nth:
                time.sleep(rng.uniform(0, 2.5 * DELAY_MS / 1000))
                p.kill()
                p.wait()
                return os.path.exists(tmp)
        present = now
        time.sleep(0.0005)
    return False


def check_after_kill(run_dir, what):
    probs, rows = history_problems(os.path.join(run_dir, "history.csv"))
    for pr in probs:
        c.check(False, "%s: history.csv: %s" % (what, pr))
    c.check(rows == ref_rows[:len(rows)], "%s: history rows differ from the uninterrupted run's" % what)
    for name in ("last.safetensors", "best.safetensors"):
        path = os.path.join(run_dir, "checkpoints", name)
        if os.path.exists(path):
            for pr in checkpoint_problems(LOUPE, path, TEST):
                c.check(False, "%s: %s" % (what, pr))
    last = os.path.join(run_dir, "checkpoints", "last.safetensors")
    if os.path.exists(last):
        try:
            _, meta = read_tensors(last)
            c.check(int(meta.get("epoch", -1)) <= len(rows),
                    "%s: last.safetensors is from epoch %s but history.csv has %d rows" % (what, meta.get("epoch"), len(rows)))
        except Exception:  # noqa: BLE001 - reported by checkpoint_problems
            pass


kills = in_write = trial = 0
t_start = time.monotonic()
while kills < KILLS and trial < 3 * KILLS:
    trial += 1
    run_dir = os.path.join(WORK, "t%02d" % trial)
    mode = "write" if trial % 2 == 0 else "random"
    p = start(run_dir, resume=False, delay_ms=DELAY_MS if mode == "write" else rng.choice([0, DELAY_MS]))
    if mode == "write":
        target = rng.choice(["last.safetensors", "last.safetensors", "best.safetensors"])
        nth = rng.randint(1, EPOCHS - 1 if target == "last.safetensors" else 2)
        killed = kill_inside_write(p, os.path.join(run_dir, "checkpoints"), target, nth)
        desc = "trial %d: kill -9 inside write #%d of %s" % (trial, nth, target)
        if killed:
            in_write += 1
        elif p.returncode == -9:
            desc += " (landed after the rename)"
            killed = True
    else:
        killed = kill_at_random_time(p)
        desc = "trial %d: kill -9 at a random time" % trial
    if not killed:
        p.wait()
        print("%s: the run ended first (exit %d), not counted" % (desc, p.returncode), flush=True)
    else:
        kills += 1
        print(desc, flush=True)
        check_after_kill(run_dir, desc)
    if killed and trial % 3 == 0:  # a second kill, this time of a resumed run
        p = start(run_dir, resume=True, delay_ms=DELAY_MS)
        if kill_at_random_time(p):
            kills += 1
            print("trial %d: kill -9 of the resumed run" % trial, flush=True)
            check_after_kill(run_dir, "trial %d (second kill)" % trial)
    p = start(run_dir, resume=True)
    rc = p.wait(timeout=300)
    what = "trial %d: after --resume" % trial
    if not c.check(rc == 0, "%s: exit %d (stderr: %s)" % (what, rc, open(run_dir + ".stderr").read()[-500:])):
        continue
    last, _ = read_tensors(os.path.join(run_dir, "checkpoints", "last.safetensors"))
    best, _ = read_tensors(os.path.join(run_dir, "checkpoints", "best.safetensors"))
    c.check(same_tensors(last, ref_last), "%s: last.safetensors differs from the uninterrupted run's" % what)
    c.check(same_tensors(best, ref_best), "%s: best.safetensors differs from the uninterrupted run's" % what)
    c.check(open(os.path.join(run_dir, "history.csv"), "rb").read() == ref_hist, "%s: history.csv differs" % what)
    c.check(open(os.path.join(run_dir, "valid_predictions.csv"), "rb").read() == ref_pred,
            "%s: valid_predictions.csv differs" % what)
    c.check(not os.path.exists(os.path.join(run_dir, "lock")), "%s: lock file left behind" % what)
    c.check(not leftover_temps(run_dir), "%s: temporary files left behind: %s" % (what, leftover_temps(run_dir)))

# Deterministic: torn last lines (a crash while appending) in both CSV logs
# after epoch 2 are dropped by --resume, which then matches the reference.
run_dir = os.path.join(WORK, "torn")
r = subprocess.run([LOUPE, *train_args(DATA, run_dir, 2, "--quiet")], capture_output=True, text=True)
if c.check(r.returncode == 0, "torn: 2-epoch run exited %d" % r.returncode):
    with open(os.path.join(run_dir, "history.csv"), "a") as f:
        f.write("3,0.51,0.7")
    with open(os.path.join(run_dir, "valid_predictions.csv"), "a") as f:
        f.write("3,valid/negative/negative_000.png,0,0.4")
    p = start(run_dir, resume=True)
    c.check(p.wait(timeout=300) == 0, "torn: --resume failed: %s" % open(run_dir + ".stderr").read()[-300:])
    c.check(open(os.path.join(run_dir, "history.csv"), "rb").read() == ref_hist, "torn: history.csv differs after --resume")
    c.check(open(os.path.join(run_dir, "valid_predictions.csv"), "rb").read() == ref_pred,
            "torn: valid_predictions.csv differs after --resume")
    last, _ = read_tensors(os.path.join(run_dir, "checkpoints", "last.safetensors"))
    c.check(same_tensors(last, ref_last), "torn: weights differ after --resume")

print("%d kills in %d trials (%d inside a checkpoint write) in %.1f s" % (kills, trial, in_write, time.monotonic() - t_start))
c.check(kills >= 20, "only %d kills landed (need 20)" % kills)
c.check(in_write >= 5, "only %d kills landed inside a checkpoint write (need 5)" % in_write)
c.done()
