"""Training parity with PyTorch 1.13: the same VGG16 (top=none, flatten,dense head)
from the same initial weights, the same images in the same order (--no-shuffle),
SGD with momentum 0.9 for 2 epochs of 3 batches; the weights after training must
match PyTorch's. Metric per tensor: max|ours - torch| / max(max|torch|, 1e-6)."""
import json, os, shutil, subprocess, sys
import numpy as np
import torch, torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import make_data, st

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(6, 2, 0), jpeg=False)
torch.manual_seed(0)
torch.set_num_threads(2)

features = torchvision.models.vgg16().features
head = torch.nn.Linear(512, 2)
model = torch.nn.Sequential(features, torch.nn.Flatten(), head)
init = {f"features.{k}": v.detach().numpy().copy() for k, v in features.state_dict().items()}
init["head.1.weight"] = head.weight.detach().numpy().copy()
init["head.1.bias"] = head.bias.detach().numpy().copy()
meta = {"format": "loupe-checkpoint-1", "arch": "vgg16", "top": "none", "head": "flatten,dense", "num_classes": "2",
        "classes": json.dumps(["negative", "positive"]), "input_size": "32x32", "in_channels": "3", "preprocess": "rescale"}
st.write(os.path.join(WORK, "init.safetensors"), init, meta)

run = os.path.join(WORK, "run")
r = subprocess.run([LOUPE, "train", DATA, "--run", run, "--model", "vgg16", "--top", "none", "--head", "flatten,dense",
                    "--weights", os.path.join(WORK, "init.safetensors"), "--size", "32x32", "--batch", "4",
                    "--epochs", "2", "--no-shuffle", "--optimizer", "sgd", "--lr", "0.001", "--momentum", "0.9",
                    "--preprocess", "rescale", "--tensorboard", "off", "--threads", "2", "--quiet"],
                   capture_output=True, text=True)
if r.returncode != 0:
    print(r.stdout, r.stderr)
    sys.exit("FAIL: loupe train exited %d" % r.returncode)

# The same in PyTorch: Keras order without shuffle = class by class, files sorted.
xs, ys = [], []
for c, name in enumerate(["negative", "positive"]):
    d = os.path.join(DATA, "train", name)
    for f in sorted(os.listdir(d)):
        xs.append(np.asarray(Image.open(os.path.join(d, f)).convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0)
        ys.append(c)
x, y = torch.tensor(np.stack(xs)), torch.tensor(ys)
# lr 0.001: at 0.01 a from-scratch VGG16 is chaotic enough that fp32 rounding differences
# (1 step: 5e-6) grow to ~1e-2 in six steps, which would test the chaos, not the code.
opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
loss_fn = torch.nn.CrossEntropyLoss()
model.train()
losses = []
for epoch in range(2):
    for b in range(0, len(x), 4):
        opt.zero_grad()
        loss = loss_fn(model(x[b:b + 4]), y[b:b + 4])
        loss.backward()
        opt.step()
        losses.append(loss.item())

ours, _ = st.read(os.path.join(run, "checkpoints", "last.safetensors"))
ref = {f"features.{k}": v for k, v in features.state_dict().items()}
ref["head.1.weight"], ref["head.1.bias"] = head.weight, head.bias
worst, worst_name, failures = 0.0, "", 0
for name, t in ref.items():
    t = t.detach().numpy()
    a = ours[name]
    err = float(np.max(np.abs(a - t)) / max(float(np.max(np.abs(t))), 1e-6))
    # also the update itself, so a no-op training cannot pass
    upd_ref = t - init[name]
    upd_err = float(np.max(np.abs((a - init[name]) - upd_ref)) / max(float(np.max(np.abs(upd_ref))), 1e-6))
    if err > worst:
        worst, worst_name = err, name
    if err > 1e-4 or upd_err > 2e-2:
        failures += 1
        print(f"FAIL {name}: weight rel err {err:.3g}, update rel err {upd_err:.3g}")
hist = open(os.path.join(run, "history.csv")).read().strip().split("\n")[1:]
loss_e1 = float(hist[0].split(",")[1])
ref_e1 = (losses[0] * 4 + losses[1] * 4 + losses[2] * 4) / 12
if abs(loss_e1 - ref_e1) > 1e-4 * max(1, abs(ref_e1)):
    failures += 1
    print(f"FAIL epoch-1 running mean loss {loss_e1} vs torch {ref_e1}")
print(f"train parity: worst weight rel err {worst:.3g} ({worst_name}); epoch-1 loss {loss_e1:.6f} vs torch {ref_e1:.6f}; {failures} failures")
sys.exit(1 if failures else 0)
