"""reliability_nan: a run whose learning rate explodes in epoch 2
(--schedule step:1:1e30) must stop with a message naming the epoch and the
divergence, exit 1, and keep epoch 1's checkpoints intact: last.safetensors
equal to a clean 1-epoch run's (weights and optimizer state), finite, loadable;
history.csv without a NaN row; no temporary, no lock. Twice: the NaN found in
a training step, and (one step per epoch) in the validation after the step
that blew the weights up. Then --resume with a sane schedule continues.

usage: test_nan.py LOUPE WORKDIR"""
import os, subprocess, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Checks, checkpoint_problems, fresh, history_problems, leftover_temps, make_dataset,
                    read_tensors, same_tensors, train_args)

LOUPE, WORK = sys.argv[1], fresh(sys.argv[2])
c = Checks("reliability_nan")
DATA = make_dataset(WORK)
TEST = os.path.join(DATA, "test")

for case, extra in (("train step", []), ("validation", ["--steps-per-epoch", "1"])):
    ref = os.path.join(WORK, "ref_" + case.replace(" ", "_"))
    r = subprocess.run([LOUPE, *train_args(DATA, ref, 1, *extra)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("FAIL: clean 1-epoch run exited %d: %s" % (r.returncode, r.stderr))
    ref_last, _ = read_tensors(os.path.join(ref, "checkpoints", "last.safetensors"))

    run_dir = os.path.join(WORK, "nan_" + case.replace(" ", "_"))
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, 3, "--schedule", "step:1:1e30", *extra)],
                       capture_output=True, text=True)
    what = "NaN in the %s" % case
    err = r.stderr.strip()
    print("%s -> exit %d: %s" % (what, r.returncode, err))
    c.check(r.returncode == 1, "%s: exit %d, expected 1" % (what, r.returncode))
    c.check("diverged" in err and "epoch 2" in err and "checkpoint is kept" in err,
            "%s: message does not say it diverged in epoch 2 and kept the checkpoint: %r" % (what, err))
    c.check(("validation" in err) == (case == "validation"), "%s: message does not say where: %r" % (what, err))
    last = os.path.join(run_dir, "checkpoints", "last.safetensors")
    if c.check(os.path.exists(last), "%s: no last.safetensors" % what):
        t, meta = read_tensors(last)
        c.check(meta.get("epoch") == "1", "%s: last.safetensors is from epoch %s, not 1" % (what, meta.get("epoch")))
        c.check(all(np.isfinite(v).all() for v in t.values()), "%s: last.safetensors has non-finite values" % what)
        c.check(same_tensors(t, ref_last), "%s: last.safetensors differs from the clean epoch-1 checkpoint" % what)
        for pr in checkpoint_problems(LOUPE, last, TEST):
            c.check(False, "%s: %s" % (what, pr))
    best = os.path.join(run_dir, "checkpoints", "best.safetensors")
    if c.check(os.path.exists(best), "%s: no best.safetensors" % what):
        t, meta = read_tensors(best)
        c.check(all(np.isfinite(v).all() for v in t.values()), "%s: best.safetensors has non-finite values" % what)
    probs, rows = history_problems(os.path.join(run_dir, "history.csv"))
    c.check(not probs, "%s: history.csv: %s" % (what, probs))
    c.check(len(rows) == 1 and "nan" not in rows[0], "%s: history rows %s (expected epoch 1 only, finite)" % (what, rows))
    c.check(not leftover_temps(run_dir), "%s: temporaries left" % what)
    c.check(not os.path.exists(os.path.join(run_dir, "lock")), "%s: lock left behind" % what)
    r = subprocess.run([LOUPE, *train_args(DATA, run_dir, 3, "--resume", *extra)], capture_output=True, text=True)
    c.check(r.returncode == 0, "%s: --resume with a constant lr exited %d: %s" % (what, r.returncode, r.stderr[-300:]))
c.done()
