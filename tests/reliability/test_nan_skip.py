"""reliability_nan_skip: `loupe train --on-nan skip` leaves out exactly the
training batches whose loss or gradients are NaN, and nothing else.

Data: 12 + 12 training images, batch 4, --no-shuffle, so the batches are
fixed: [neg 0-3] [neg 4-7] [neg 8-11] [pos 0-3] [pos 4-7] [pos 8-11].
The test hooks of src/train/fit.c (set by loupe-testhooks from the
variables below; only with --on-nan skip; see README.md) poison chosen
batches: batch 2 gets a NaN pixel (LOUPE_TEST_NAN_INPUT: real NaN through
the engine, which ends up in the first convolution's weight gradient), batch
3 a NaN loss (LOUPE_TEST_NAN_LOSS) and batch 5 a NaN gradient with a finite
loss (LOUPE_TEST_NAN_GRAD: caught before the optimizer step). The oracle is an ordinary run (default --on-nan
stop, no hooks) on a copy of the data without the poisoned batches' images:
its batches are the good batches, in the same order. With Adam (whose step
count enters every update) the skipping run must end with the oracle's
weights and optimizer state bit for bit, and the same history.csv; run.json's
skipped_nan_batches = bad batches x epochs; one warning per epoch. Twice:
full network (no feature cache; all three hooks) and a frozen base with the
feature cache (loss and gradient hooks: a NaN pixel never reaches a trainable
gradient there).

Also: skip mode without any NaN equals stop mode; --resume after epoch 1,
and after a Ctrl-C in the middle of epoch 2 (where the signal lands is timing;
a few tries), continues bit-identically and keeps the counts; an epoch where every batch is
skipped stops (exit 1, last good checkpoint kept); a NaN validation loss stops
as with `stop`; a bad --on-nan value is a usage error.

usage: test_nan_skip.py LOUPE WORKDIR   (LOUPE: loupe-testhooks, for its LOUPE_TEST_* variables)"""
import json, os, shutil, signal, subprocess, sys, time
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, fresh, history_problems, leftover_temps, read_tensors, same_tensors  # noqa: E402
import make_data  # noqa: E402  (tests/train, put on the path by common)

LOUPE, WORK = sys.argv[1], fresh(sys.argv[2])
c = Checks("reliability_nan_skip")
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(12, 2, 2))
HOOK_VARS = ("LOUPE_TEST_NAN_INPUT", "LOUPE_TEST_NAN_LOSS", "LOUPE_TEST_NAN_GRAD")
# batch (from 1) -> the hook that poisons it, by one image of the batch
POISON = {2: ("LOUPE_TEST_NAN_INPUT", "negative_005"), 3: ("LOUPE_TEST_NAN_LOSS", "negative_009"),
          5: ("LOUPE_TEST_NAN_GRAD", "positive_006")}


def batch_images(b):
    cls, first = ("negative", (b - 1) * 4) if b <= 3 else ("positive", (b - 4) * 4)
    return ["%s_%03d" % (cls, i) for i in range(first, first + 4)]


def clean_copy(name, bad_batches):
    """The oracle's data: DATA without the images of bad_batches."""
    out = os.path.join(WORK, name)
    shutil.copytree(DATA, out)
    bad = {im for b in bad_batches for im in batch_images(b)}
    for cls in ("negative", "positive"):
        d = os.path.join(out, "train", cls)
        for f in os.listdir(d):
            if os.path.splitext(f)[0] in bad:
                os.remove(os.path.join(d, f))
    return out


def args(data, run, epochs, *extra):
    return ["train", data, "--run", run, "--model", "tiny", "--top", "none", "--head", "flatten,dropout:0.5,dense",
            "--size", "32x32", "--batch", "4", "--epochs", str(epochs), "--optimizer", "adam", "--lr", "0.01",
            "--seed", "7", "--threads", "1", "--no-shuffle", "--tensorboard", "off", *extra]


def train(data, run, epochs, *extra, env=None):
    e = dict(os.environ)
    for k in HOOK_VARS:
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run([LOUPE, *args(data, run, epochs, *extra)], capture_output=True, text=True, env=e,
                          timeout=300)


def last(run):
    return read_tensors(os.path.join(run, "checkpoints", "last.safetensors"))


def history(run):
    return open(os.path.join(run, "history.csv")).read()


def run_json(run):
    return json.load(open(os.path.join(run, "run.json")))


def ok(r, what):
    if not c.check(r.returncode == 0, "%s: exit %d: %s" % (what, r.returncode, r.stderr[-400:])):
        print(r.stdout[-2000:])
        return False
    return True


EPOCHS = 2
FULL_BAD = (2, 3, 5)
FULL_HOOKS = dict(POISON[b] for b in FULL_BAD)
for variant, extra, bad in (("full network", [], FULL_BAD), ("frozen base, feature cache", ["--freeze", "base"], (3, 5))):
    tag = "nocache" if not extra else "cache"
    BAD_PER_EPOCH = len(bad)
    oracle = os.path.join(WORK, "oracle_" + tag)
    skip = os.path.join(WORK, "skip_" + tag)
    ro = train(clean_copy("data_" + tag, bad), oracle, EPOCHS, *extra)
    rs = train(DATA, skip, EPOCHS, "--on-nan", "skip", *extra, env=dict(POISON[b] for b in bad))
    if not (ok(ro, "%s: oracle run" % variant) and ok(rs, "%s: skipping run" % variant)):
        continue
    if extra:
        for r, who in ((ro, "oracle"), (rs, "skipping run")):
            c.check("Feature cache: frozen layers" in r.stdout, "%s: %s did not use the feature cache" % (variant, who))
    for e in range(1, EPOCHS + 1):
        line = "WARNING: epoch %d: skipped %d of 6 training batches" % (e, BAD_PER_EPOCH)
        c.check(rs.stdout.count(line) == 1, "%s: no single warning %r in:\n%s" % (variant, line, rs.stdout))
    c.check(rs.stdout.count("WARNING: epoch") == EPOCHS, "%s: %d warnings, expected %d"
            % (variant, rs.stdout.count("WARNING: epoch"), EPOCHS))
    js = run_json(skip)
    c.check(js.get("skipped_nan_batches") == BAD_PER_EPOCH * EPOCHS,
            "%s: run.json skipped_nan_batches = %r, expected %d" % (variant, js.get("skipped_nan_batches"),
                                                                   BAD_PER_EPOCH * EPOCHS))
    c.check(js.get("config", {}).get("on_nan") == "skip", "%s: run.json config.on_nan = %r"
            % (variant, js.get("config", {}).get("on_nan")))
    c.check("skipped_nan_batches" not in run_json(oracle), "%s: stop-mode run.json has skipped_nan_batches" % variant)
    ts, ms = last(skip)
    to, mo = last(oracle)
    c.check(all(np.isfinite(v).all() for v in ts.values() if v.dtype.kind == "f"),
            "%s: last.safetensors has non-finite values" % variant)
    good = 6 - BAD_PER_EPOCH
    c.check("optim.step" in ts and int(ts["optim.step"].reshape(-1)[0]) == good * EPOCHS,
            "%s: optim.step = %s, expected %d (skipped batches must not count)"
            % (variant, ts.get("optim.step"), good * EPOCHS))
    if not c.check(same_tensors(ts, to), "%s: weights/optimizer state differ from the run without the bad batches"
                   % variant):
        for k in sorted(ts):
            if k in to and ts[k].tobytes() != to[k].tobytes():
                print("   differs:", k, float(np.abs(ts[k].astype(np.float64) - to[k]).max()))
    c.check(history(skip) == history(oracle), "%s: history.csv differs from the oracle's:\n%s---\n%s"
            % (variant, history(skip), history(oracle)))
    c.check(not leftover_temps(skip), "%s: temporaries left" % variant)

# Skip mode with nothing to skip is the ordinary step, bit for bit.
plain, plain_skip = os.path.join(WORK, "plain"), os.path.join(WORK, "plain_skip")
r1, r2 = train(DATA, plain, 1), train(DATA, plain_skip, 1, "--on-nan", "skip")
if ok(r1, "plain run") and ok(r2, "plain run with --on-nan skip"):
    c.check(same_tensors(last(plain)[0], last(plain_skip)[0]), "--on-nan skip without NaN differs from stop")
    c.check("WARNING: epoch" not in r2.stdout, "--on-nan skip without NaN warned")
    c.check(run_json(plain_skip).get("skipped_nan_batches") == 0, "run.json count is not 0 without NaN")

# --resume after epoch 1 continues as the uninterrupted run (skip_nocache).
res = os.path.join(WORK, "resumed")
r = train(DATA, res, 1, "--on-nan", "skip", env=FULL_HOOKS)
if ok(r, "resume: epoch 1"):
    r = train(DATA, res, EPOCHS, "--on-nan", "skip", "--resume", env=FULL_HOOKS)
    if ok(r, "resume: epoch 2"):
        ref = os.path.join(WORK, "skip_nocache")
        c.check(same_tensors(last(res)[0], last(ref)[0]), "resumed run differs from the uninterrupted one")
        c.check(history(res) == history(ref), "resumed history.csv differs from the uninterrupted one")
        c.check(run_json(res).get("skipped_nan_batches") == len(FULL_BAD) * EPOCHS,
                "resumed run.json skipped_nan_batches = %r" % run_json(res).get("skipped_nan_batches"))

        # Every batch of epoch 3 NaN ("_0" is in every file name): stop, epoch 2's checkpoint kept.
        ck = os.path.join(res, "checkpoints", "last.safetensors")
        before = open(ck, "rb").read()
        r = train(DATA, res, EPOCHS + 1, "--on-nan", "skip", "--resume", env={"LOUPE_TEST_NAN_LOSS": "_0"})
        err = r.stderr.strip()
        print("every batch NaN -> exit %d: %s" % (r.returncode, err))
        c.check(r.returncode == 1, "every batch NaN: exit %d, expected 1" % r.returncode)
        c.check("all 6 training batches of epoch 3" in err and "checkpoint is kept" in err,
                "every batch NaN: message %r" % err)
        c.check(open(ck, "rb").read() == before, "every batch NaN: last.safetensors changed")
        probs, rows = history_problems(os.path.join(res, "history.csv"))
        c.check(not probs and len(rows) == EPOCHS, "every batch NaN: history.csv %s %s" % (probs, rows))
        c.check(run_json(res).get("skipped_nan_batches") == len(FULL_BAD) * EPOCHS + 6,
                "every batch NaN: run.json skipped_nan_batches = %r" % run_json(res).get("skipped_nan_batches"))
        c.check(not os.path.exists(os.path.join(res, "lock")), "every batch NaN: lock left behind")

# Ctrl-C in the middle of epoch 2 after its first skipped batch (step 2 of 6):
# the epoch's skip count is in the train state, and --resume gives the
# uninterrupted run's weights, warning and total. Where the signal lands is
# timing: a few delays are tried; only a landing after step 2 exercises this.
ref = os.path.join(WORK, "skip_nocache")
landed = False
for attempt, delay in enumerate((0.25, 0.4, 0.55, 0.3, 0.45)):
    mid = os.path.join(WORK, "mid_%d" % attempt)
    e = dict(os.environ, **FULL_HOOKS)
    p = subprocess.Popen([LOUPE, *args(DATA, mid, EPOCHS, "--on-nan", "skip")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, bufsize=1, env=e)
    for line in p.stdout:
        if line.startswith("Epoch 2/"):
            time.sleep(delay)
            p.send_signal(signal.SIGINT)
            break
    p.communicate(timeout=120)
    if p.returncode != 130:
        continue
    state = json.loads(last(mid)[1].get("train_state", "{}"))
    if not (state.get("epochs_done") == 1 and 2 <= state.get("step_in_epoch", 0) <= 5):
        continue
    landed = True
    print("Ctrl-C landed at epoch 2 step %d (nan_skipped_epoch %s)" % (state["step_in_epoch"],
                                                                      state.get("nan_skipped_epoch")))
    c.check(state.get("nan_skipped_epoch", 0) >= 1, "mid-epoch state lacks the epoch's skips: %s" % state)
    r = train(DATA, mid, EPOCHS, "--on-nan", "skip", "--resume", env=FULL_HOOKS)
    if ok(r, "mid-epoch resume"):
        c.check(same_tensors(last(mid)[0], last(ref)[0]), "mid-epoch resumed run differs from the uninterrupted one")
        c.check(history(mid) == history(ref), "mid-epoch resumed history.csv differs")
        line = "WARNING: epoch 2: skipped %d of 6 training batches" % len(FULL_BAD)
        c.check(line in r.stdout, "mid-epoch resume: no %r in:\n%s" % (line, r.stdout))
        c.check(run_json(mid).get("skipped_nan_batches") == len(FULL_BAD) * EPOCHS,
                "mid-epoch resume: run.json skipped_nan_batches = %r" % run_json(mid).get("skipped_nan_batches"))
    break
if not landed:
    print("NOTE: no Ctrl-C landed between steps 2 and 5 of epoch 2; mid-epoch resume not exercised this time")

# A NaN validation loss stops as with stop: one step per epoch, lr x 1e30 in epoch 2.
val = os.path.join(WORK, "val_nan")
r = train(DATA, val, 3, "--on-nan", "skip", "--steps-per-epoch", "1", "--schedule", "step:1:1e30")
err = r.stderr.strip()
print("NaN validation with skip -> exit %d: %s" % (r.returncode, err))
c.check(r.returncode == 1 and "validation of epoch 2" in err and "checkpoint is kept" in err,
        "NaN validation with skip: exit %d, message %r" % (r.returncode, err))
if os.path.exists(os.path.join(val, "checkpoints", "last.safetensors")):
    c.check(last(val)[1].get("epoch") == "1", "NaN validation with skip: last.safetensors not epoch 1's")

r = train(DATA, os.path.join(WORK, "bad_opt"), 1, "--on-nan", "maybe")
c.check(r.returncode == 2 and "on-nan" in r.stderr, "--on-nan maybe: exit %d %r" % (r.returncode, r.stderr))
c.done()
