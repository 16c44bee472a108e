"""ResNet through the command line, against torchvision: torchvision's resnet18 state dict
(its own random init, saved as safetensors) goes in with --weights and --freeze base; the
log says what was loaded (every tensor but the 1000-class fc), that fc is new, and that the
frozen base (batch norm frozen, --bn auto) feeds the feature cache. The checkpoint loads
strictly into torchvision.models.resnet18(num_classes=2), I64 step counts included, and
`loupe predict` gives the probabilities torchvision's model gives in eval mode on the same
pixels (the images are 40x40, the input size: no resize; rescale preprocessing x/255),
within 1e-4 (predict prints 4 decimals). A second run trains everything with --bn train and must end with running
statistics that moved and step counts equal to the number of training steps, run.json's bn_check (the training
images' accuracy in inference mode after the last epoch), and `loupe diagnose` then flags batch norm on batches of 4
images (not the first run, whose batch norm is frozen with the base)."""
import os, re, shutil, subprocess, sys
import numpy as np
import torch
import torchvision
from PIL import Image

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import make_data
import safetensors_io as st

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(6, 3, 3), size=40, jpeg=False)
failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg)
    if not cond:
        failures.append(msg)


def train(name, *extra):
    run = os.path.join(WORK, name)
    r = subprocess.run([LOUPE, "train", DATA, "--run", run, "--model", "resnet18", "--size", "40x40", "--batch", "4",
                        "--epochs", "2", "--threads", "2", "--tensorboard", "off", "--preprocess", "rescale", *extra],
                       capture_output=True, text=True)
    if r.returncode:
        print(r.stdout, r.stderr)
        sys.exit("FAIL: train %s exited %d" % (name, r.returncode))
    return run, r.stdout


torch.manual_seed(0)
tv = torchvision.models.resnet18()
weights = os.path.join(WORK, "resnet18.safetensors")
st.write(weights, {k: v.numpy() for k, v in tv.state_dict().items()}, {})

run, log = train("frozen", "--weights", weights, "--freeze", "base")
m = re.search(r"Loaded (\d+) tensors", log)
check(m and int(m.group(1)) == len(tv.state_dict()) - 2, "loaded every tensor but fc's: %s" % (m.group(0) if m else log))
check("Initialised new (not in the weights file): fc.weight,fc.bias" in log, "fc initialised new")
check("Feature cache: frozen layers up to avgpool" in log, "the frozen base (batch norm frozen) feeds the feature cache")

ckpt = os.path.join(run, "checkpoints", "last.safetensors")
sd, _ = st.read(ckpt)
model = torchvision.models.resnet18(num_classes=2)
state = {k: torch.from_numpy(np.array(v)) for k, v in sd.items() if not k.startswith(("optim.", "train."))}
model.load_state_dict(state, strict=True)
check(all(sd[k].dtype == np.int64 for k in sd if k.endswith("num_batches_tracked")), "num_batches_tracked saved as I64")
frozen_same = all(np.array_equal(sd[k], tv.state_dict()[k].numpy()) for k in tv.state_dict() if not k.startswith("fc."))
check(frozen_same, "the frozen base, batch norm statistics included, is the file's, unchanged")
# run.json counts parameters as Keras does: torchvision's parameters and running statistics, not the step counters
import json
cfg = json.load(open(os.path.join(run, "run.json")))
want_params = sum(t.numel() for t in model.parameters()) + sum(b.numel() for n, b in model.named_buffers()
                                                              if not n.endswith("num_batches_tracked"))
want_trainable = sum(t.numel() for n, t in model.named_parameters() if n.startswith("fc."))
check(cfg.get("parameters") == want_params and cfg.get("trainable_parameters") == want_trainable,
      "run.json parameters %s / trainable %s, torchvision %d / %d" % (cfg.get("parameters"), cfg.get("trainable_parameters"),
                                                                     want_params, want_trainable))

model.eval()
test = sorted(os.path.join(DATA, "test", c, f) for c in ("negative", "positive") for f in os.listdir(os.path.join(DATA, "test", c)))
x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0 for p in test])
with torch.no_grad():
    want = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
r = subprocess.run([LOUPE, "predict", ckpt] + test, capture_output=True, text=True)
got = {}
for line in r.stdout.splitlines():
    mm = re.match(r"(.*): \S+ \([0-9.]+\)\s+\[negative=([0-9.]+) positive=([0-9.]+)\]", line)
    if mm:
        got[mm.group(1)] = (float(mm.group(2)), float(mm.group(3)))
check(len(got) == len(test), "predict printed all %d images" % len(test))
worst = max((abs(got[p][j] - want[i][j]) for i, p in enumerate(test) if p in got for j in range(2)), default=1.0)
check(worst <= 1e-4, "predict's probabilities vs torchvision eval: worst difference %.2e (<= 1e-4)" % worst)

run, log = train("train_bn", "--weights", weights, "--bn", "train", "--optimizer", "adam")
sd, _ = st.read(os.path.join(run, "checkpoints", "last.safetensors"))
steps = 2 * 3  # 2 epochs of 12 images in batches of 4
counts = {int(np.array(sd[k]).reshape(-1)[0]) for k in sd if k.endswith("num_batches_tracked")}
check(counts == {steps}, "--bn train: every num_batches_tracked is %d (got %s)" % (steps, sorted(counts)))
moved = np.abs(np.array(sd["bn1.running_mean"]) - tv.state_dict()["bn1.running_mean"].numpy()).max()
check(moved > 0, "--bn train: running statistics updated (bn1.running_mean moved %.2e)" % moved)

def verdicts(run):
    r = subprocess.run([LOUPE, "diagnose", run, "--json"], capture_output=True, text=True)
    return r.stdout


import json
bc = json.load(open(os.path.join(run, "run.json"))).get("bn_check", {})
check(bc.get("epoch") == 2 and bc.get("images") == 12 and 0 <= bc.get("train_accuracy_inference_mode", -1) <= 1,
      "--bn train: run.json has the training set's accuracy in inference mode (bn_check): %s" % bc)
check("bn_check" not in json.load(open(os.path.join(WORK, "frozen", "run.json"))), "no bn_check with batch norm frozen")
check("batchnorm_small_batch" in verdicts(run), "diagnose flags batch norm on batches of 4 images (--bn train)")
check("batchnorm_small_batch" not in verdicts(os.path.join(WORK, "frozen")), "and not with the base (and its batch norm) frozen")

if failures:
    sys.exit("FAILED: " + "; ".join(failures))
print("resnet run ok")
