"""End to end through the CLI on a generated dataset: train, run directory
contents, resume (bit-identical to an uninterrupted run), evaluate vs predict,
early stopping with restore, ReduceLROnPlateau against Keras' rule."""
import csv, json, os, shutil, subprocess, sys
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import make_data
import safetensors_io as st
from keras_ref import KerasEarlyStopping, KerasReduceLR

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"))
failures = []

def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)

def run(*args, expect=0):
    r = subprocess.run([LOUPE, *args], capture_output=True, text=True)
    if r.returncode != expect:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(f"FAIL: loupe {' '.join(args)} exited {r.returncode}, expected {expect}")
    return r

BASE = ["--model", "tiny", "--top", "none", "--head", "flatten,dense", "--size", "32x32", "--batch", "4",
        "--lr", "0.05", "--momentum", "0.9", "--seed", "3", "--threads", "2"]

# 1. a plain run
r1 = os.path.join(WORK, "r1")
out = run("train", DATA, "--run", r1, "--epochs", "4", *BASE).stdout
check("Found 24 images belonging to 2 classes" in out, "Keras-like found line")
check("No valid/ split" not in out and "monitor val_loss" in out, "a run with valid/ monitors val_loss and says so")
cfg = json.load(open(os.path.join(r1, "run.json")))
check(cfg["classes"] == ["negative", "positive"], "class order in run.json")
check(cfg["counts"]["train"] == {"negative": 12, "positive": 12}, "train counts in run.json")
rows = list(csv.DictReader(open(os.path.join(r1, "history.csv"))))
check(open(os.path.join(r1, "history.csv")).readline().strip() == "epoch,loss,accuracy,val_loss,val_accuracy,lr", "history header")
check([int(r["epoch"]) for r in rows] == [1, 2, 3, 4], "history epochs 1..4")
preds = list(csv.reader(open(os.path.join(r1, "valid_predictions.csv"))))
check(preds[0] == ["epoch", "path", "label", "p0", "p1"], "valid_predictions header")
check(len(preds) == 1 + 4 * 8, "one prediction row per valid image per epoch")
for e in range(1, 5):
    ep = [p for p in preds[1:] if int(p[0]) == e]
    probs = np.array([[float(p[3]), float(p[4])] for p in ep])
    labels = np.array([int(p[2]) for p in ep])
    check(np.allclose(probs.sum(1), 1, atol=1e-5), "probabilities sum to 1")
    nll = float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))
    acc = float(np.mean(probs.argmax(1) == labels))
    row = rows[e - 1]
    check(abs(nll - float(row["val_loss"])) < 1e-5, f"epoch {e}: val_loss {row['val_loss']} equals the mean NLL of valid_predictions {nll}")
    check(abs(acc - float(row["val_accuracy"])) < 1e-9, f"epoch {e}: val_accuracy matches valid_predictions")
    check(all(p[1].startswith("valid/") for p in ep), "paths relative to DATA")
for name in ("last.safetensors", "best.safetensors"):
    check(os.path.exists(os.path.join(r1, "checkpoints", name)), name + " written")
check(any(f.startswith("events.out.tfevents.") for f in os.listdir(os.path.join(r1, "logs", "train"))), "tensorboard train log")
best_epoch = int(np.argmin([float(r["val_loss"]) for r in rows])) + 1
_, bmeta = st.read(os.path.join(r1, "checkpoints", "best.safetensors"))
check(int(bmeta.get("epoch", -1)) == best_epoch, f"best.safetensors is from the best val_loss epoch {best_epoch} (meta {bmeta.get('epoch')})")

# 2. resume: 2 epochs, then continue to 4 == uninterrupted 4 epochs, bit for bit
r2 = os.path.join(WORK, "r2")
run("train", DATA, "--run", r2, "--epochs", "2", *BASE)
run("train", DATA, "--run", r2, "--epochs", "4", "--resume", *BASE)
a, _ = st.read(os.path.join(r1, "checkpoints", "last.safetensors"))
b, _ = st.read(os.path.join(r2, "checkpoints", "last.safetensors"))
check(sorted(a) == sorted(b), "same tensors after resume")
check(all(np.array_equal(a[k], b[k]) for k in a if k in b), "resumed weights and optimizer state bit-identical")
check(open(os.path.join(r1, "history.csv")).read() == open(os.path.join(r2, "history.csv")).read(), "resumed history identical")
run("train", DATA, "--run", r2, "--epochs", "4", *BASE, expect=2)  # existing run without --resume refuses
# --resume with options that would continue another run than the one saved: refused, each one
# named with both values, and the run left as it was (run.json keeps the run's own options);
# the learning rate may change (the remedy for a run that diverged), said in a note
before = open(os.path.join(r2, "run.json")).read()
other = [{"0.05": "0.01", "3": "4"}.get(a, a) for a in BASE]  # --lr and --seed changed
err = run("train", DATA, "--run", r2, "--epochs", "5", "--resume", *other, "--optimizer", "adam", expect=2).stderr
for opt, was, now in (("--seed", "3", "4"), ("--optimizer", '"sgd"', '"adam"')):
    check(f"{opt}: the run has {was}, this command {now}" in err, f"resume refusal names {opt} ({was} -> {now}): {err!r}")
check("--batch" not in err and "--epochs" not in err and "--lr" not in err, f"resume refusal names only what must not differ: {err!r}")
check(open(os.path.join(r2, "run.json")).read() == before, "a refused --resume left run.json as it was")
lower = [{"0.05": "0.01"}.get(a, a) for a in BASE]
out = run("train", DATA, "--run", r2, "--epochs", "5", "--resume", *lower).stdout
check("learning-rate policy" in out and "--lr: the run has 0.05, this command 0.01" in out, f"resume with a lower --lr: no note: {out!r}")

# 3. evaluate vs predict on the test split
ck = os.path.join(r1, "checkpoints", "best.safetensors")
ev = json.loads(run("evaluate", ck, os.path.join(DATA, "test"), "--json").stdout)
check(ev["n"] == 8 and ev["classes"] == ["negative", "positive"], "evaluate counts and classes")
check(sum(map(sum, ev["confusion"])) == 8, "confusion matrix sums to n")
lines = run("predict", ck, os.path.join(DATA, "test"), "--json").stdout.strip().split("\n")
check(len(lines) == 8, "predict: one line per test image")
correct, nll = 0, 0.0
for line in lines:
    o = json.loads(line)
    label = 0 if "/negative/" in o["path"] else 1
    correct += int(np.argmax(o["probs"]) == label)
    nll -= np.log(o["probs"][label])
check(abs(correct / 8 - ev["accuracy"]) < 1e-9, f"predict accuracy {correct/8} == evaluate accuracy {ev['accuracy']}")
check(abs(nll / 8 - ev["loss"]) < 1e-4, f"predict NLL {nll/8} == evaluate loss {ev['loss']}")
# an image in both train/ and valid/ (a leak): train warns, as data does
leak = os.path.join(WORK, "leak")
shutil.copytree(DATA, leak)
neg = os.path.join(leak, "train", "negative")
shutil.copyfile(os.path.join(neg, sorted(os.listdir(neg))[0]), os.path.join(leak, "valid", "negative", "copy.png"))
out = run("train", leak, "--run", os.path.join(WORK, "leak_run"), "--epochs", "1", *BASE).stdout
check("1 group across train/ and valid/" in out, f"train warns of a train/valid duplicate: {out[:600]!r}")
# a tiny run's checkpoint as --weights of another tiny run: loaded as it is (loupe's names)
out = run("train", DATA, "--run", os.path.join(WORK, "from_ck"), "--epochs", "1", *BASE, "--weights", ck).stdout
check("Loaded" in out and "tensors from" in out and "Initialised new" not in out, f"tiny checkpoint as --weights: {out[-400:]!r}")
# a checkpoint trained with a frozen base keeps that split: its summary counts the base frozen
# (the head, flatten,dense on 16 channels of 8x8, 32x32 after two 2x2 pools, to 2 classes: 1024 x 2 + 2 trainable)
run("train", DATA, "--run", os.path.join(WORK, "frozen"), "--epochs", "1", *BASE, "--freeze", "base")
summ = run("summary", os.path.join(WORK, "frozen", "checkpoints", "last.safetensors")).stdout
check("Trainable params: 2,050" in summ, f"summary of a --freeze base checkpoint: {summ[-300:]!r}")
# evaluate on a folder with a class the model does not have: its images are left out, and said
extra = os.path.join(WORK, "with_extra")
shutil.copytree(os.path.join(DATA, "test"), extra)
shutil.copytree(os.path.join(extra, "negative"), os.path.join(extra, "unknown"))
ev2 = json.loads(run("evaluate", ck, extra, "--json").stdout)
check(ev2["n"] == 8 and any("unknown/" in n and "not among the classes" in n for n in ev2["notes"]),
      f"evaluate names the folder it left out: {ev2.get('notes')}")
check("note: " in run("evaluate", ck, extra).stdout, "evaluate's text report carries the note")
# evaluate on a folder that holds some of the model's classes (Keras' flow_from_directory with classes=
# counts a missing one as 0 images): evaluated, the missing class named in a note; none of them: refused
some = os.path.join(WORK, "one_class")
shutil.copytree(os.path.join(DATA, "test", "negative"), os.path.join(some, "negative"))
ev3 = json.loads(run("evaluate", ck, some, "--json").stdout)
support = [ev3["per_class"][c]["support"] for c in ("negative", "positive")]
check(ev3["n"] == 4 and support == [4, 0] and any("no folder for 1 of the 2 classes ('positive')" in n for n in ev3["notes"]),
      f"evaluate on a folder of one class: {ev3.get('n')} images, {ev3.get('per_class')}, notes {ev3.get('notes')}")
# --skip-bad: the bad images left out are named in the notes (and counted)
open(os.path.join(some, "negative", "broken.png"), "wb").write(b"\x89PNG\r\n\x1a\n not really")
ev4 = json.loads(run("evaluate", ck, some, "--json", "--skip-bad").stdout)
check(ev4["n"] == 4 and ev4["skipped_bad"] == 1 and any("negative/broken.png" in n for n in ev4["notes"]),
      f"evaluate --skip-bad names the bad image: skipped {ev4.get('skipped_bad')}, notes {ev4.get('notes')}")
os.remove(os.path.join(some, "negative", "broken.png"))
os.rename(os.path.join(some, "negative"), os.path.join(some, "other"))
err = run("evaluate", ck, some, expect=2).stderr
check("no images of the model's classes" in err and "'negative', 'positive'" in err, f"evaluate on a folder of none of them: {err!r}")
# a folder's files that are not images (by content, whatever the name) are named and skipped,
# as train and data skip them; an image that is not readable fails the command
notes = os.path.join(WORK, "with_notes")
shutil.copytree(os.path.join(DATA, "test"), notes)
open(os.path.join(notes, "README.txt"), "w").write("notes\n")
open(os.path.join(notes, "negative", "notes.png"), "w").write("not a png\n")
r = run("predict", ck, notes, "--json")
check(len(r.stdout.strip().split("\n")) == 8, "predict of a folder with non-images: one line per image")
check("README.txt: not an image, skipped" in r.stderr and "notes.png: not an image, skipped" in r.stderr,
      f"predict names the skipped files: {r.stderr!r}")
shutil.copyfile(os.path.join(notes, "negative", sorted(os.listdir(os.path.join(notes, "negative")))[0]),
                os.path.join(notes, "truncated.png"))
with open(os.path.join(notes, "truncated.png"), "r+b") as f:
    f.truncate(60)
run("predict", ck, notes, "--json", expect=2)
txt = run("evaluate", ck, os.path.join(DATA, "test")).stdout
check("confusion matrix" in txt and "precision" in txt, "evaluate text report")
# a folder goes 16 images at a time, decoded in parallel: the same probabilities as one at a
# time (batch 16 and batch 1 may take other kernels: 1e-5), in path order, and a bad file in
# the middle is reported and skipped without losing the others
mixed = os.path.join(WORK, "mixed")
os.makedirs(mixed)
imgs = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(DATA, "test")) for f in fs)
for i in range(20):
    shutil.copy(imgs[i % len(imgs)], os.path.join(mixed, "img%02d%s" % (i, os.path.splitext(imgs[i % len(imgs)])[1])))
open(os.path.join(mixed, "img09bad.png"), "wb").write(b"\x89PNG\r\n\x1a\n not really")
p = subprocess.run([LOUPE, "predict", ck, mixed, "--json"], capture_output=True, text=True)
got = [json.loads(line) for line in p.stdout.strip().split("\n")]
check(p.returncode == 2 and "img09bad.png" in p.stderr and len(got) == 20, "predict of a folder with a bad file: exit 2 (%d), "
      "the file named, the 20 others predicted (%d)" % (p.returncode, len(got)))
check([os.path.basename(o["path"]) for o in got] == sorted(f for f in os.listdir(mixed) if "bad" not in f), "in path order")
worst = 0.0
for o in got[:3] + got[-3:]:
    one = json.loads(run("predict", ck, o["path"], "--json").stdout)
    worst = max(worst, float(np.abs(np.array(one["probs"]) - np.array(o["probs"])).max()))
check(worst <= 1e-5, "a folder's probabilities equal one file's at a time (%.1e)" % worst)

# 4. early stopping with restore, and ReduceLROnPlateau, checked against Keras' rules on our own history
r3 = os.path.join(WORK, "r3")
run("train", DATA, "--run", r3, "--epochs", "14", *BASE[:-8], "--batch", "4", "--lr", "0.3", "--momentum", "0.9",
    "--seed", "5", "--early-stop", "2", "--restore-best", "--reduce-lr", "0.5:1")
rows = list(csv.DictReader(open(os.path.join(r3, "history.csv"))))
vl = [float(r["val_loss"]) for r in rows]
es, rl = KerasEarlyStopping(2, False), KerasReduceLR(0.5, 1, False)
lr, stop_at = 0.3, None
for i, v in enumerate(vl):
    check(abs(float(rows[i]["lr"]) - lr) < 1e-9 * lr, f"epoch {i+1}: lr {rows[i]['lr']} equals Keras ReduceLROnPlateau's {lr}")
    lr = rl.on_epoch_end(v, lr)
    if es.on_epoch_end(i, v):
        stop_at = i + 1
        break
check(stop_at == len(rows) or (stop_at is None and len(rows) == 14), f"stopped after epoch {len(rows)}, Keras would at {stop_at}")
fin, fin_meta = st.read(os.path.join(r3, "checkpoints", "final.safetensors"))
bst, bst_meta = st.read(os.path.join(r3, "checkpoints", "best.safetensors"))
check(all(np.array_equal(fin[k], bst[k]) for k in bst), "restored weights equal the best checkpoint")
best_epoch = 1 + min(range(len(vl)), key=lambda i: vl[i])
check(len(rows) > best_epoch and fin_meta.get("epoch") == bst_meta.get("epoch") == str(best_epoch),
      f"final.safetensors (restored) says epoch {fin_meta.get('epoch')}, best {bst_meta.get('epoch')}: both should be "
      f"{best_epoch}, the lowest val_loss of {len(rows)} epochs")

# a run folder given where a checkpoint goes: the message names the checkpoint to give
err = run("evaluate", r1, os.path.join(DATA, "test"), expect=2).stderr
check("a run folder" in err and os.path.join(r1, "checkpoints", "best.safetensors") in err, f"evaluate RUN: {err!r}")

# 5. --validation-steps: that many batches of a random sample of valid/ (the same every epoch), not the
# first batches of its sorted list, which hold only its first class
mixed = 0
for seed in ("3", "4", "5"):
    rv = os.path.join(WORK, "rv" + seed)
    out = run("train", DATA, "--run", rv, "--epochs", "2", *[seed if a == "3" else a for a in BASE], "--validation-steps", "1").stdout
    check("Validating on 4 of the 8 valid/ images" in out, "--validation-steps 1 --batch 4 says it validates on 4 of 8")
    rows = list(csv.reader(open(os.path.join(rv, "valid_predictions.csv"))))[1:]
    per_epoch = {e: sorted(r[1] for r in rows if r[0] == e) for e in ("1", "2")}
    check(len(per_epoch["1"]) == 4 and len(set(per_epoch["1"])) == 4 and per_epoch["1"] == per_epoch["2"],
          f"seed {seed}: 4 distinct images validated, the same in both epochs ({per_epoch})")
    mixed += len({p.split("/")[1] for p in per_epoch["1"]}) == 2
check(mixed > 0, "--validation-steps: no seed of three sampled both classes (the first batches of the sorted valid/?)")

# a grayscale run's checkpoint as --weights of an RGB run: refused naming the option to add
gray = os.path.join(WORK, "gray")
run("train", DATA, "--run", gray, "--epochs", "1", *BASE, "--color-mode", "grayscale")
err = run("train", DATA, "--run", os.path.join(WORK, "from_gray"), "--epochs", "1", *BASE, "--weights",
          os.path.join(gray, "checkpoints", "last.safetensors"), expect=2).stderr
check("add --color-mode grayscale" in err, f"--weights of a grayscale run into an RGB one: {err!r}")

print("end-to-end: %d failures" % len(failures))
sys.exit(1 if failures else 0)
