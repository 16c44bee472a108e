"""Diagnose on a real run that shows the seed user's story: two validation images
are mislabelled (drawn like the other class), so as training goes on the model
grows more confident in them being wrong: validation loss rises while accuracy
stays flat. `loupe diagnose` must name the overconfident-errors verdict with
exactly those images, and --apply must store a temperature that evaluate uses."""
import json, os, shutil, subprocess, sys
HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import make_data
import safetensors_io as st

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(12, 6, 4), jpeg=False, mislabel_valid=2)
run = os.path.join(WORK, "run")
r = subprocess.run([LOUPE, "train", DATA, "--run", run, "--model", "tiny", "--top", "none", "--head", "flatten,dense",
                    "--size", "32x32", "--batch", "4", "--epochs", "20", "--lr", "0.05", "--momentum", "0.9",
                    "--threads", "2", "--tensorboard", "off", "--quiet", "--diagnose"], capture_output=True, text=True)
if r.returncode:
    print(r.stdout, r.stderr)
    sys.exit("FAIL: train exited %d" % r.returncode)
failures = []
def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)

# train --diagnose: the short diagnosis after training, and the report
print(r.stdout)
check("overconfident" in r.stdout.lower(), "train --diagnose prints the short diagnosis naming the overconfident errors")
check(os.path.exists(os.path.join(run, "report.html")), "train --diagnose writes report.html")

d = subprocess.run([LOUPE, "diagnose", run, "--json"], capture_output=True, text=True)
check(d.returncode == 0, "diagnose --json exits 0: " + d.stderr)
j = json.loads(d.stdout)
ids = [v["id"] for v in j["verdicts"]]
print("verdicts:", ids, "| headline:", j["headline"])
check("overconfident_errors" in ids, "overconfident_errors verdict present")
planted = {"valid/negative/negative_000.png", "valid/negative/negative_001.png"}
wrong = {im["path"] for im in j["images"] if im["wrong"]}
check(wrong == planted, f"misclassified images are the planted ones: {sorted(wrong)}")
check(j["rise"] is not None and j["rise"] > 0, "val_loss rose after its best epoch")
check(j["rise_share_misclassified"] is not None and j["rise_share_misclassified"] > 0.5,
      f"most of the rise comes from the misclassified images ({j['rise_share_misclassified']})")
check(abs(j["accuracy_last"] - 10 / 12) < 1e-9, f"accuracy stays at 10/12 ({j['accuracy_last']})")
text = subprocess.run([LOUPE, "diagnose", run], capture_output=True, text=True).stdout
check("negative_000.png" in text, "text names the planted image")
check(os.path.exists(os.path.join(run, "report.html")), "report.html written")

# a run whose data folder was given relative to where train ran: diagnose from another folder still
# finds the images for the report's thumbnails (run.json's data_abs)
r = subprocess.run([LOUPE, "train", "data", "--run", "run_rel", "--model", "tiny", "--top", "none", "--head", "flatten,dense",
                    "--size", "32x32", "--batch", "4", "--epochs", "20", "--lr", "0.05", "--momentum", "0.9",
                    "--threads", "2", "--tensorboard", "off", "--quiet"], capture_output=True, text=True, cwd=WORK)
check(r.returncode == 0, "train with a relative data folder: exit %d %s" % (r.returncode, r.stderr[-300:]))
d = subprocess.run([LOUPE, "diagnose", os.path.join(WORK, "run_rel")], capture_output=True, text=True, cwd="/")
html = open(os.path.join(WORK, "run_rel", "report.html")).read() if d.returncode == 0 else ""
check(d.returncode == 0 and "data:image/png" in html and "not found" not in html,
      "diagnose from another folder: the report embeds the images (exit %d, %d images, 'not found' %s)" %
      (d.returncode, html.count("data:image/png"), "not found" in html))

# --apply: temperature into the checkpoints; evaluate then reports it and its loss changes, accuracy does not
ck = os.path.join(run, "checkpoints", "best.safetensors")
before = json.loads(subprocess.run([LOUPE, "evaluate", ck, os.path.join(DATA, "valid"), "--json"], capture_output=True, text=True).stdout)
a = subprocess.run([LOUPE, "diagnose", run, "--apply"], capture_output=True, text=True)
check(a.returncode == 0, "diagnose --apply: " + a.stderr)
_, meta = st.read(ck)
check("temperature" in meta and float(meta["temperature"]) > 0, f"temperature in best.safetensors metadata ({meta.get('temperature')})")
after = json.loads(subprocess.run([LOUPE, "evaluate", ck, os.path.join(DATA, "valid"), "--json"], capture_output=True, text=True).stdout)
check(abs(after["temperature"] - float(meta.get("temperature", 1))) < 1e-6, "evaluate uses the stored temperature")
check(after["accuracy"] == before["accuracy"], "calibration leaves accuracy unchanged")
check(after["loss"] <= before["loss"] + 1e-9, f"calibrated NLL {after['loss']} <= uncalibrated {before['loss']}")
print("diagnose run: %d failures" % len(failures))
sys.exit(1 if failures else 0)
