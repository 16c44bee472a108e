"""A real training run's TensorBoard files, read with the independent reader of
tests/log (own CRC32C and protobuf decoding): every record's CRCs, Keras' layout
and tags, and each epoch scalar equal to history.csv's value for that epoch;
--tensorboard off writes nothing."""
import csv, glob, os, re, shutil, subprocess, sys
import numpy as np

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "log"))
import make_data
from tfevents_reader import read_events

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(8, 4, 0))
failures = []

def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)

ARGS = ["--model", "tiny", "--top", "none", "--head", "flatten,dense", "--size", "32x32", "--batch", "4",
        "--epochs", "3", "--lr", "0.05", "--momentum", "0.9", "--threads", "2", "--quiet"]
run = os.path.join(WORK, "run")
r = subprocess.run([LOUPE, "train", DATA, "--run", run, "--histogram-freq", "1", "--batch-log-freq", "1", *ARGS],
                   capture_output=True, text=True)
if r.returncode:
    print(r.stdout, r.stderr)
    sys.exit("FAIL: train exited %d" % r.returncode)
hist = list(csv.DictReader(open(os.path.join(run, "history.csv"))))
name_re = re.compile(r"^events\.out\.tfevents\.\d{10}\.[^.]+(\..+)?\.\d+\.\d+\.v2$")
for sub, keys in (("train", {"epoch_loss": "loss", "epoch_accuracy": "accuracy", "epoch_learning_rate": "lr"}),
                  ("validation", {"epoch_loss": "val_loss", "epoch_accuracy": "val_accuracy"})):
    files = glob.glob(os.path.join(run, "logs", sub, "events.out.tfevents.*"))
    check(len(files) == 1, f"one event file in logs/{sub}")
    if not files:
        continue
    check(name_re.match(os.path.basename(files[0])) is not None, f"file name {os.path.basename(files[0])}")
    ev = read_events(files[0])  # raises on any bad CRC
    check(ev[0].get("file_version") == "brain.Event:2", "first record is file_version brain.Event:2")
    for tag, col in keys.items():
        got = {e["step"]: e["value"] for e in ev if e["tag"] == tag}
        check(sorted(got) == [1, 2, 3], f"{sub}/{tag}: one scalar per epoch, steps 1..3 (got {sorted(got)})")
        for row in hist:
            e = int(row["epoch"])
            want = np.float32(float(row[col]))
            # history.csv holds %.9g of the double; TensorBoard the float32 of the double: allow 1 ulp
            check(e in got and abs(np.float32(got[e]) - want) <= np.spacing(want), f"{sub}/{tag} epoch {e}: {got.get(e)} != history {want}")
    if sub == "train":
        check(sum(1 for e in ev if e["tag"] == "batch_loss") == 3 * 4, "batch_loss every step (4 steps x 3 epochs)")
        check(any(e.get("histo") for e in ev if e["tag"] == "features.0.weight"), "weight histograms")
        check(any(e.get("histo") for e in ev if e["tag"] == "features.0.weight/gradient"), "gradient histograms")
    else:
        check(any(e.get("image") for e in ev if e["tag"] == "highest_loss_images"), "highest-loss image grid")
        check(any(e["tag"] == "diagnostics/ece" for e in ev), "diagnostics scalars")
        check(any(e.get("pr_curve") for e in ev if e["tag"] == "pr_curve"), "PR curve for a binary task")

off = os.path.join(WORK, "off")
r = subprocess.run([LOUPE, "train", DATA, "--run", off, "--tensorboard", "off", *ARGS], capture_output=True, text=True)
check(r.returncode == 0, "train with --tensorboard off")
check(not os.path.exists(os.path.join(off, "logs")), "--tensorboard off writes no logs folder")
print("tensorboard run: %d failures" % len(failures))
sys.exit(1 if failures else 0)
