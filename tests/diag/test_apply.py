#!/usr/bin/env python3
"""diag_apply: `loupe diagnose RUN --apply` stores the temperature fitted on the
predictions of the epoch each checkpoint holds (best: lowest val_loss; last: the
last epoch) in the checkpoint's safetensors metadata key "temperature", leaving
the tensors unchanged. Usage: test_apply.py LOUPE_CLI WORKDIR"""
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import runfixtures as rf  # noqa: E402
import safetensors_io as st  # noqa: E402

CLI, WORK = sys.argv[1], sys.argv[2]
os.makedirs(WORK, exist_ok=True)
FAIL = []


def check(cond, msg):
    if not cond:
        FAIL.append(msg)
        print("FAIL:", msg)


run = os.path.join(WORK, "apply")
shutil.rmtree(run, ignore_errors=True)
probs, labels, _ = rf.seed_story(run)
ref = rf.reference(probs, labels)
rng = np.random.default_rng(0)
tensors = {"classifier.6.weight": rng.normal(size=(2, 8)).astype(np.float32),
           "classifier.6.bias": rng.normal(size=(2,)).astype(np.float32)}
meta = {"format": "pt", "arch": "vgg16", "classes": "negative,positive"}
for name in ("best", "last"):
    st.write(os.path.join(run, "checkpoints", f"{name}.safetensors"), tensors, meta)

out = subprocess.run([CLI, "diagnose", run, "--apply", "--no-report"], capture_output=True, text=True)
check(out.returncode == 0, f"--apply exit {out.returncode}: {out.stderr}")
expect = {"best": rf.temperature(probs[ref["best_epoch"] - 1], labels)[0], "last": rf.temperature(probs[-1], labels)[0]}
for name, T in expect.items():
    t, m = st.read(os.path.join(run, "checkpoints", f"{name}.safetensors"))
    got = float(m.get("temperature", "nan"))
    check(abs(got - T) <= 1e-4 * T, f"{name}: stored temperature {got} vs reference {T}")
    check(all(m.get(k) == v for k, v in meta.items()), f"{name}: other metadata changed: {m}")
    check(all(np.array_equal(t[k], tensors[k]) for k in tensors), f"{name}: tensors changed")
check("stored in" in out.stdout, f"--apply did not say what it stored: {out.stdout[-300:]}")

# no checkpoint: a clear error
shutil.rmtree(os.path.join(run, "checkpoints"))
out = subprocess.run([CLI, "diagnose", run, "--apply", "--no-report"], capture_output=True, text=True)
check(out.returncode != 0 and "checkpoint" in out.stderr, f"--apply without checkpoints: {out.returncode} {out.stderr}")

if FAIL:
    print(f"{len(FAIL)} failure(s)")
    sys.exit(1)
print("diag_apply: all checks passed")
