#!/usr/bin/env python3
"""diag_runs: `loupe diagnose` on synthetic run directories, each telling one story,
checked against figures computed here independently (numpy/torch).
Usage: test_runs.py LOUPE_CLI WORKDIR"""
import html.parser
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfixtures as rf  # noqa: E402

CLI, WORK = sys.argv[1], sys.argv[2]
os.makedirs(WORK, exist_ok=True)
FAIL = []


def check(cond, msg):
    if not cond:
        FAIL.append(msg)
        print("FAIL:", msg)
    return bool(cond)


def close(a, b, tol, what):
    ok = a is not None and b is not None and abs(a - b) <= tol * max(1.0, abs(b))
    check(ok, f"{what}: loupe {a!r} vs reference {b!r}")


def fresh(name):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def diagnose(run, *args, rc=0):
    out = subprocess.run([CLI, "diagnose", run, *args], capture_output=True, text=True)
    check(out.returncode == rc, f"diagnose {run} {args}: exit {out.returncode}, expected {rc}\n{out.stderr}")
    return out


def diagnose_json(run, *args):
    out = diagnose(run, "--json", *args)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as e:
        FAIL.append(f"--json output of {run} is not JSON: {e}")
        return {}


def ids(d):
    return [v["id"] for v in d.get("verdicts", [])]


def check_headline(name, d, probs, labels):
    ref = rf.reference(probs, labels)
    for key in ("best_epoch", "last_epoch"):
        check(d[key] == ref[key], f"{name}: {key} {d[key]} vs {ref[key]}")
    for key in ("val_loss_best", "val_loss_last", "ece", "nll", "nll_calibrated", "ece_calibrated"):
        close(d[key], ref[key], 1e-6, f"{name}: {key}")
    close(d["calibration"]["brier"], ref["brier"], 1e-9, f"{name}: brier")
    close(d["temperature"], ref["temperature"], 1e-4, f"{name}: temperature")
    if ref["rise_share_misclassified"] is None:
        check(d["rise_share_misclassified"] is None, f"{name}: rise share should be null")
    else:
        close(d["rise_share_misclassified"], ref["rise_share_misclassified"], 1e-9, f"{name}: rise_share_misclassified")
    # exact decomposition: contributions of wrong and correct images add up to the loss of every epoch
    for e, f in zip(d["epochs"], ref["per_epoch"]):
        if e["val_loss_pred"] is None:
            continue
        close(e["loss_wrong"] + e["loss_correct"], e["val_loss_pred"], 1e-12, f"{name}: epoch {e['epoch']} decomposition sums")
        close(e["val_loss_pred"], f["nll"], 1e-9, f"{name}: epoch {e['epoch']} val_loss")
        close(e["loss_wrong"], f["loss"][~f["correct"]].sum() / len(labels), 1e-9, f"{name}: epoch {e['epoch']} loss_wrong")
    return ref


def check_report(name, path, min_svg=5):
    check(os.path.exists(path), f"{name}: {path} not written")
    if not os.path.exists(path):
        return
    text = open(path, encoding="utf-8").read()

    class P(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.stack, self.errors = {}, [], []

        def handle_starttag(self, tag, attrs):
            self.tags[tag] = self.tags.get(tag, 0) + 1
    p = P()
    p.feed(text)
    check(p.tags.get("svg", 0) >= min_svg, f"{name}: report has {p.tags.get('svg', 0)} svg charts")
    check("<script" not in text.lower(), f"{name}: report contains a script")
    stripped = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    check("http://" not in stripped and "https://" not in stripped, f"{name}: report refers to the network")
    check(text.rstrip().endswith("</html>"), f"{name}: report truncated")
    leftovers = [f for f in os.listdir(os.path.dirname(path)) if ".tmp." in f]
    check(not leftovers, f"{name}: temporary files left: {leftovers}")


# ---- 1. the seed story: overconfident errors, overfitting, preprocessing mismatch ----
run = fresh("seed")
probs, labels, paths = rf.seed_story(run)
d = diagnose_json(run)
# the text's image table and its "(N more in --json and the HTML report)" agree with what --json lists
for n_img in ("1", "3", "40"):
    lines = diagnose(run, "--images", n_img).stdout.splitlines()
    listed = len(diagnose_json(run, "--images", n_img).get("images", []))
    top = next((i for i, l in enumerate(lines) if l.startswith("Images:")), None)
    if check(top is not None, f"seed --images {n_img}: no 'Images:' table"):
        end = next(i for i in range(top + 1, len(lines) + 1) if i == len(lines) or not lines[i].strip() or "more in --json" in lines[i])
        rows = end - top - 3  # the title, the column names, the epochs
        more = int(lines[end].split("(")[1].split()[0]) if end < len(lines) and "more in --json" in lines[end] else 0
        check(rows > 0 and rows + more == listed, f"seed --images {n_img}: {rows} rows + '{more} more' vs {listed} images in --json")
ref = check_headline("seed", d, probs, labels)
v = ids(d)
for want in ("overconfident_errors", "overfitting", "preprocessing_mismatch", "small_validation_set", "early_stopping"):
    check(want in v, f"seed: verdict {want} missing (got {v})")
check("single_class" not in v and "lr_too_high" not in v, f"seed: unexpected verdicts {v}")
oc = next((x for x in d["verdicts"] if x["id"] == "overconfident_errors"), None)
if oc:
    named = {x["path"] for x in oc["evidence"]["images"]}
    check(named == {paths[i] for i in ref["more_confidently_wrong"]},
          f"seed: overconfident images {sorted(named)} vs {sorted(paths[i] for i in ref['more_confidently_wrong'])}")
    check(oc["evidence"]["n_misclassified"] == len(ref["misclassified"]), "seed: n_misclassified")
    # p_true of the misclassified images, best -> last
    f = ref["per_epoch"]
    wrong = sorted(ref["misclassified"])
    close(oc["evidence"]["p_true_misclassified_best"], float(np.mean([probs[ref["best_epoch"] - 1, i, labels[i]] for i in wrong])),
          1e-9, "seed: p_true best")
    close(oc["evidence"]["p_true_misclassified_last"], float(np.mean([probs[-1, i, labels[i]] for i in wrong])), 1e-9, "seed: p_true last")
# the images list: the misclassified first, by loss increase
imgs = d["images"]
first = [x["path"] for x in imgs[:len(ref["misclassified"])]]
check(set(first) == {paths[i] for i in ref["misclassified"]}, f"seed: images list does not start with the misclassified: {first}")
incr = [x["loss_change"] for x in imgs[:len(ref["misclassified"])]]
check(incr == sorted(incr, reverse=True), "seed: misclassified not ranked by loss increase")
check(len(imgs[0]["trajectory"]) == probs.shape[0], "seed: trajectory length")
close(imgs[0]["trajectory"][-1], imgs[0]["p_true_last"], 1e-12, "seed: trajectory ends at p_true_last")
# Wilson interval of 46/52
lo, hi = d["accuracy_ci"]
check(0.76 < lo < 0.78 and 0.94 < hi < 0.95, f"seed: Wilson interval {lo}, {hi}")
# early stopping what-if: first epoch with `patience` epochs without improvement after the best
vl = [x["nll"] for x in ref["per_epoch"]]
best, wait, stop = math.inf, 0, None
for e, x in enumerate(vl, 1):
    if x < best:
        best, wait = x, 0
    else:
        wait += 1
        if wait >= 5:
            stop = e
            break
check(d["early_stopping"]["stop_epoch"] == stop, f"seed: early stop epoch {d['early_stopping']['stop_epoch']} vs {stop}")
check(d["early_stopping"]["restored_epoch"] == ref["best_epoch"], "seed: early stopping restores the best epoch")
# the text: headline first, in the words, the figures right
out = diagnose(run)
text = out.stdout
check("val_loss rose %.3g -> %.3g between epoch %d and epoch %d" % (ref["val_loss_best"], ref["val_loss_last"], ref["best_epoch"],
                                                                     ref["last_epoch"]) in " ".join(text.split()),
      "seed: headline sentence missing:\n" + text[:600])
check("accuracy stayed at 0.885" in " ".join(text.split()), "seed: 'accuracy stayed at 0.885' missing")
check("255x smaller" in " ".join(text.split()) and "swapped" in text, "seed: preprocessing explanation missing")
check(text.index("val_loss rose") < text.index("Per epoch"), "seed: explanation does not come before the tables")
check_report("seed", os.path.join(run, "report.html"))
# --report FILE, --short, --epoch
rep = os.path.join(WORK, "seed-report.html")
out = diagnose(run, "--short", "--report", rep)
check("Per epoch" not in out.stdout, "seed: --short printed the tables")
check_report("seed --report", rep)
# analysing the best epoch itself: no loss change to rank by, so the misclassified by their loss
db = diagnose_json(run, "--epoch", str(ref["best_epoch"]), "--no-report")
wrong_b = [x["loss_last"] for x in db.get("images", []) if x["wrong"]]
check(db.get("last_epoch") == ref["best_epoch"] and len(wrong_b) > 1 and wrong_b == sorted(wrong_b, reverse=True),
      f"seed --epoch best: misclassified ranked by loss ({wrong_b})")
check("highest loss first" in diagnose(run, "--epoch", str(ref["best_epoch"]), "--no-report").stdout,
      "seed --epoch best: the text says how the images are ranked")
d20 = diagnose_json(run, "--epoch", "20", "--no-report")
check(d20.get("last_epoch") == 20, f"seed --epoch 20: last_epoch {d20.get('last_epoch')}")
ref20 = rf.reference(probs[:20], labels)
close(d20.get("temperature"), ref20["temperature"], 1e-4, "seed --epoch 20: temperature")
close(d20.get("val_loss_last"), ref20["val_loss_last"], 1e-9, "seed --epoch 20: val_loss_last")
diagnose(run, "--epoch", "99", rc=2)

# ---- 2. preprocessing matches: no mismatch verdict; torch vs rescale: 4x, no channel swap ----
run = fresh("seed-torch")
rf.seed_story(run, preprocess="rescale", weights_preprocess="torch")
d = diagnose_json(run, "--no-report")
pm = next((x for x in d.get("verdicts", []) if x["id"] == "preprocessing_mismatch"), None)
check(pm is not None and "4x smaller" in pm["message"] and "swapped" not in pm["message"], f"torch vs rescale: {pm}")
run = fresh("seed-caffe")
rf.seed_story(run, preprocess="caffe", weights_preprocess="caffe")
check("preprocessing_mismatch" not in ids(diagnose_json(run, "--no-report")), "caffe/caffe: mismatch reported")

# ---- 3. single-class predictor ----
run = fresh("single")
probs, labels, paths = rf.single_class(run)
d = diagnose_json(run)
check_headline("single", d, probs, labels)
v = ids(d)
check("single_class" in v, f"single: verdict missing ({v})")
check("overconfident_errors" not in v and "overfitting" not in v, f"single: unexpected verdicts {v}")
sc = next((x for x in d["verdicts"] if x["id"] == "single_class"), {"evidence": {}})
check(sc["evidence"].get("class") == "negative" and sc["evidence"].get("predicted") == 52, f"single: evidence {sc['evidence']}")
close(sc["evidence"].get("prior"), 28 / 52, 1e-12, "single: prior")
close(d["accuracy_last"], 28 / 52, 1e-12, "single: accuracy equals the prior")
check_report("single", os.path.join(run, "report.html"))

# ---- 3b. a validation set of one class, predicted correctly: no single-class verdict ----
# (a tiny run's validation split can hold one class; predicting it for every image is
# then right, not a model that learned the prior)
run = fresh("oneclass")
rng = np.random.default_rng(5)
p0 = rng.uniform(0.7, 0.95, size=(3, 4))
rf.write_run(run, ["negative", "positive"], rf.rounded(np.stack([p0, 1 - p0], -1)), [0, 0, 0, 0],
             [f"valid/{i}.png" for i in range(4)], [dict(loss=0.6, accuracy=0.7) for _ in range(3)])
d = diagnose_json(run)
check(d["accuracy_last"] == 1.0, f"oneclass: accuracy {d['accuracy_last']} (want 1)")
check("single_class" not in ids(d), f"oneclass: single_class verdict for a correct model ({ids(d)})")

# ---- 4. overfitting ----
run = fresh("overfit")
probs, labels, paths = rf.overfitting(run)
d = diagnose_json(run)
ref = check_headline("overfit", d, probs, labels)
v = ids(d)
check("overfitting" in v, f"overfit: verdict missing ({v})")
check("small_validation_set" not in v or d["n_valid"] < 400, "overfit: small set")
of = next((x for x in d["verdicts"] if x["id"] == "overfitting"), {"evidence": {}})
check((of["evidence"].get("train_loss_last") or 1) < 0.05, f"overfit: train loss evidence {of['evidence']}")
check("single_class" not in v, f"overfit: unexpected {v}")

# ---- 5. learning rate too high: spikes, NaN; analysis falls back to the last finite epoch ----
run = fresh("lr")
probs, labels, paths = rf.lr_too_high(run)
d = diagnose_json(run)
v = ids(d)
check("lr_too_high" in v, f"lr: verdict missing ({v})")
lr = next((x for x in d["verdicts"] if x["id"] == "lr_too_high"), {"evidence": {}, "message": ""})
check(lr["evidence"].get("nan_epochs") == [6, 7, 8], f"lr: nan epochs {lr['evidence'].get('nan_epochs')}")
check([s["epoch"] for s in lr["evidence"].get("spikes", [])] == [3, 5], f"lr: spikes {lr['evidence'].get('spikes')}")
check("0.05" in lr["message"], "lr: suggestion of a 10x lower learning rate missing")
check(d["last_epoch"] == 5, f"lr: analysed epoch {d['last_epoch']} (expected the last finite one, 5)")
check(any("non-finite" in n for n in d["notes"]), f"lr: note missing {d['notes']}")
check_report("lr", os.path.join(run, "report.html"))

# ---- 6. healthy run with 2000 images: no problem verdict ----
run = fresh("healthy")
probs, labels, paths = rf.healthy(run)
d = diagnose_json(run)
check_headline("healthy", d, probs, labels)
bad = [x["id"] for x in d["verdicts"] if x["severity"] != "info"]
check(not bad, f"healthy: unexpected verdicts {bad}")
check(0.8 < d["temperature"] < 1.25, f"healthy: calibrated run has T = {d['temperature']}")

# ---- 7. a crash while appending: torn last line, incomplete last epoch; resumed epochs ----
run = fresh("torn")
probs, labels, paths = rf.seed_story(run)
with open(os.path.join(run, "valid_predictions.csv"), "a") as f:
    for i in range(10):  # epoch 51 half written, last line torn
        f.write(f"51,{paths[i]},{labels[i]},0.5,0.5\n")
    f.write(f"51,{paths[10]},{labels[10]},0.4")
with open(os.path.join(run, "history.csv"), "a") as f:
    f.write("51,0.01,1.0,0.7")
d = diagnose_json(run, "--no-report")
check(d.get("last_epoch") == 50, f"torn: last epoch {d.get('last_epoch')}")
notes = " ".join(d.get("notes", []))
check("valid_predictions.csv:" in notes and "no newline" in notes, f"torn: torn-line note missing: {notes}")
check("epoch 51 has 10 of 52 images" in notes, f"torn: incomplete-epoch note missing: {notes}")
check("history.csv:52" in notes, f"torn: history torn-line note missing: {notes}")
out = diagnose(run, "--no-report")
check("no newline" in out.stdout, "torn: note not printed")
# resumed run: epochs 49-50 written again after 50 (later rows win)
run = fresh("resumed")
probs, labels, paths = rf.seed_story(run)
with open(os.path.join(run, "valid_predictions.csv"), "a") as f:
    for e in (49, 50):
        for i in range(len(labels)):
            f.write(f"{e},{paths[i]},{labels[i]},{probs[e - 1, i, 0]!r},{probs[e - 1, i, 1]!r}\n")
d = diagnose_json(run, "--no-report")
check(d.get("last_epoch") == 50 and any("written again" in n for n in d.get("notes", [])), f"resumed: {d.get('notes')}")
close(d.get("val_loss_last"), rf.reference(probs, labels)["val_loss_last"], 1e-9, "resumed: val_loss_last")

# ---- 8. no run.json: says less, still works ----
run = fresh("norunjson")
probs, labels, paths = rf.seed_story(run)
os.unlink(os.path.join(run, "run.json"))
d = diagnose_json(run, "--no-report")
check(d.get("classes") == ["0", "1"], f"norunjson: classes {d.get('classes')}")
check("preprocessing_mismatch" not in ids(d) and "overconfident_errors" in ids(d), f"norunjson: verdicts {ids(d)}")
check(any("run.json" in n for n in d.get("notes", [])), "norunjson: note missing")

# ---- 9. patience too short: val_loss (history.csv) improves again after a long plateau ----
run = fresh("plateau")
rf.seed_story(run)
series = [1.0 - 0.05 * e for e in range(1, 6)] + [0.8] * 8 + [0.7, 0.72] + [0.9] * 35
hist = open(os.path.join(run, "history.csv")).read().splitlines()
for e, v in enumerate(series, 1):
    parts = hist[e].split(",")
    parts[3] = repr(v)
    hist[e] = ",".join(parts)
open(os.path.join(run, "history.csv"), "w").write("\n".join(hist) + "\n")
d = diagnose_json(run, "--no-report")
pt = next((x for x in d.get("verdicts", []) if x["id"] == "patience_too_short"), None)
# Keras replay: improvements at 1..5 and 14; a gap of 9 epochs; patience 5 stops at epoch 10 with epoch 5's weights
check(pt is not None and pt["evidence"] == {"patience": 5, "stop_epoch": 10, "best_epoch": 14, "needed_patience": 9},
      f"plateau: {pt}")
check("early_stopping" not in ids(d), "plateau: early_stopping reported although it would have stopped too soon")
check(d.get("early_stopping", {}).get("too_early") is True, "plateau: too_early")
d = diagnose_json(run, "--no-report", "--patience", "9")
check("patience_too_short" not in ids(d) and d["early_stopping"]["stop_epoch"] == 23, f"plateau --patience 9: {d.get('early_stopping')}")

# ---- 9b. batch norm: trained on 2 images' statistics, and its two modes disagreeing on the
# training images (keras #9214); neither with batch norm frozen or the modes agreeing ----
def bn_run(name, batch, bn_layers_on, acc_train, acc_inf, images=40):
    run = fresh(name)
    rng = np.random.default_rng(3)
    labels = np.array([0] * 10 + [1] * 10)
    probs = np.clip(rng.uniform(0.3, 0.7, (3, 20, 1)), 0, 1)
    probs = np.concatenate([probs, 1 - probs], axis=2)
    paths = [f"valid/c{l}/img_{i:02d}.png" for i, l in enumerate(labels)]
    rf.write_run(run, ["c0", "c1"], probs, labels, paths, [{"loss": 0.5, "accuracy": acc_train}] * 3,
                 config={"model": "resnet18", "batch": batch, "bn": "auto", "bn_layers": 20, "bn_batch_stats_layers": bn_layers_on},
                 extra={"bn_check": {"epoch": 3, "images": images, "train_accuracy_train_mode": acc_train,
                                     "train_accuracy_inference_mode": acc_inf, "train_loss_inference_mode": 0.8}})
    return diagnose_json(run, "--no-report")

d = bn_run("bn_gap", 2, 20, 0.9, 0.5)
check("batchnorm_small_batch" in ids(d), f"bn, batch 2: no batchnorm_small_batch in {ids(d)}")
gap = next((v for v in d.get("verdicts", []) if v["id"] == "batchnorm_mode_gap"), None)
check(gap is not None and abs(gap["evidence"]["train_accuracy_inference_mode"] - 0.5) < 1e-12 and "90%" in gap["message"]
      and "50%" in gap["message"], f"bn 0.9 vs 0.5: {gap}")
d = bn_run("bn_frozen", 2, 0, 0.9, 0.88)
check("batchnorm_small_batch" not in ids(d) and "batchnorm_mode_gap" not in ids(d), f"bn frozen, modes agree: {ids(d)}")
d = bn_run("bn_large", 32, 20, 0.9, 0.85, images=20)  # a gap of 5 points: one image in 20
check("batchnorm_small_batch" not in ids(d) and "batchnorm_mode_gap" not in ids(d), f"bn batch 32, 5-point gap: {ids(d)}")

# ---- 10. command line ----
out = subprocess.run([CLI, "diagnose", "--help"], capture_output=True, text=True)
check(out.returncode == 0 and "--apply" in out.stdout, "diagnose --help")
out = subprocess.run([CLI, "diagnose", os.path.join(WORK, "seed"), "--bogus"], capture_output=True, text=True)
check(out.returncode == 2 and "unknown option" in out.stderr, f"unknown option: {out.returncode} {out.stderr}")
out = subprocess.run([CLI, "diagnose", os.path.join(WORK, "seed"), "--epoch", "x"], capture_output=True, text=True)
check(out.returncode == 2, "bad --epoch value accepted")
out = subprocess.run([CLI, "diagnose", os.path.join(WORK, "no-such-run")], capture_output=True, text=True)
check(out.returncode != 0 and "no-such-run" in out.stderr, f"missing run dir: {out.stderr}")

if FAIL:
    print(f"{len(FAIL)} failure(s)")
    sys.exit(1)
print("diag_runs: all checks passed")
