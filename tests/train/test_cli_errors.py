"""Every bad command line gives one clear line on stderr and a non-zero exit."""
import os, shutil, subprocess, sys
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import make_data
import safetensors_io as st
import numpy as np

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(3, 2, 2))
R = os.path.join(WORK, "run")
failures = 0
cases = [
    (["train", DATA, "--run", R, "--bogus"], "unknown option"),
    (["train", DATA, "--run", R, "--epochs", "x"], "--epochs"),
    (["train", DATA, "--run", R, "--epochs", "-3"], "--epochs"),
    (["train", DATA, "--run", R, "--lr", "fast"], "--lr"),
    (["train", DATA, "--run", R, "--size", "32"], "--size"),
    (["train", DATA, "--run", R, "--size", "16x16", "--model", "tiny"], "too small"),
    (["train", os.path.join(WORK, "nope"), "--run", R], "nope"),
    (["train", DATA], "--run"),
    (["train", DATA, "--run", R, "--model", "resnet50"], "unknown model"),
    (["train", DATA, "--run", R, "--optimizer", "rmsprop"], "unknown optimizer"),
    (["train", DATA, "--run", R, "--schedule", "step:x"], "schedule"),
    (["train", DATA, "--run", R, "--reduce-lr", "2:1"], "--reduce-lr"),
    (["train", DATA, "--run", R, "--model", "tiny", "--size", "32x32", "--top", "none", "--weights", os.path.join(WORK, "w.safetensors")], "w.safetensors"),
    (["evaluate", os.path.join(WORK, "missing.safetensors"), DATA], "missing.safetensors"),
    (["evaluate"], "needs"),
    (["predict", os.path.join(WORK, "missing.safetensors"), os.path.join(WORK, "nothere.png")], "nothere.png"),
    (["frobnicate"], "unknown command"),
]
# weights for another model: a VGG16-shaped conv file given to the tiny model
st.write(os.path.join(WORK, "w.safetensors"), {"features.0.weight": np.zeros((64, 3, 3, 3), np.float32), "features.0.bias": np.zeros(64, np.float32)})
for args, needle in cases:
    r = subprocess.run([LOUPE, *args], capture_output=True, text=True)
    lines = [l for l in r.stderr.strip().split("\n") if l and not l.startswith("hint:")]
    ok = r.returncode != 0 and needle in r.stderr and len(lines) >= 1 and "Segmentation" not in r.stderr and r.returncode < 128
    if not ok:
        failures += 1
        print(f"FAIL loupe {' '.join(args)}: exit {r.returncode}, stderr {r.stderr!r}")
print("cli errors: %d failures" % failures)
sys.exit(1 if failures else 0)
