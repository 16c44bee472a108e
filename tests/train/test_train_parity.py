"""Training parity with PyTorch 1.13: the same VGG16 (top=none, flatten,dense head)
from the same initial weights, the same images in the same order (--no-shuffle),
SGD with momentum 0.9 for 2 epochs of 3 batches; the weights after training, the
update they made and the epoch-1 loss must match PyTorch's. Metric per tensor:
max|ours - torch| / max(max|torch|, 1e-6) (of the update for the update check).

Six steps amplify fp32 rounding, so the tolerances come from PyTorch's own sensitivity
here: PyTorch trains again from the initial weights times (1 +- 1e-7) (N_SENS sign
patterns) and the same metrics say how far it moves from itself. Tensor by tensor, loupe
must be within K_SENS x the worst of those + FLOOR, for the reasons and values of the
engine's parity test (tests/engine/parity.py): the jumps come from ReLU and max-pool
decisions within rounding of their ties, which one sign pattern may miss; FLOOR, a few
fp32 ulps, keeps a sensitivity near zero from demanding bit equality.

loupe trains with direct convolutions (--conv direct), PyTorch's own summation path: the
subject here is the fit loop, not Winograd, whose rounding (about 10x a 1e-7 nudge of the
weights) flips such decisions where PyTorch's sensitivity runs do not (seen under the AVX2
cap: biases 1.5e-2 apart after six steps against a sensitivity of 3.5e-5). Winograd's
parity has its own tests (engine_parity_vgg16_none_64*, train_conv_algo)."""
import json, os, shutil, subprocess, sys
import numpy as np
import torch, torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import make_data
import safetensors_io as st

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
                    "--preprocess", "rescale", "--tensorboard", "off", "--threads", "2", "--conv", "direct", "--quiet"],
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
# loupe's checkpoint names -> the torch model's
TORCH_NAME = {n: ("0." + n[len("features."):] if n.startswith("features.") else "2." + n[len("head.1."):]) for n in init}


def torch_fit(start):
    """PyTorch's training from the weights start: final weights (loupe's names) and the epoch-1 mean loss."""
    model.load_state_dict({TORCH_NAME[n]: torch.from_numpy(v) for n, v in start.items()}, strict=True)
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
    sd = model.state_dict()
    # batches of 4: the running mean over epoch 1's samples is the mean of its 3 batch losses
    return {n: sd[TORCH_NAME[n]].numpy().copy() for n in start}, sum(losses[:3]) / 3


def perturb(state, seed):
    """Every weight times (1 +- 1e-7), random signs: each nonzero element moves by one or two fp32 ulps."""
    rng = np.random.RandomState(seed)
    return {n: v + v * np.where(rng.randint(0, 2, v.shape) == 1, np.float32(1e-7), np.float32(-1e-7))
            for n, v in state.items()}


def errors(final, start, loss, ref):
    """The checks' metrics for one run against PyTorch's (ref = its final weights and loss). Per tensor,
    relative to max|torch|: the weights, and the update from the run's own start (so that a no-op training
    cannot pass); the epoch-1 mean loss relative to max(1, |torch|)."""
    rf, rl = ref
    w, u = {}, {}
    for n, t in rf.items():
        w[n] = float(np.max(np.abs(final[n] - t)) / max(float(np.max(np.abs(t))), 1e-6))
        upd = t - init[n]
        u[n] = float(np.max(np.abs((final[n] - start[n]) - upd)) / max(float(np.max(np.abs(upd))), 1e-6))
    return {"weights": w, "update": u, "epoch-1 loss": {"loss": abs(loss - rl) / max(1.0, abs(rl))}}


ref = torch_fit(init)
ours, _ = st.read(os.path.join(run, "checkpoints", "last.safetensors"))
hist = open(os.path.join(run, "history.csv")).read().strip().split("\n")[1:]
loss_e1 = float(hist[0].split(",")[1])
ours_err = errors(ours, init, loss_e1, ref)
K_SENS, N_SENS, FLOOR = 10, 8, 1e-6
sens = []
for seed in range(1, N_SENS + 1):
    start = perturb(init, seed)
    final, loss = torch_fit(start)
    sens.append(errors(final, start, loss, ref))
failures = 0
for check in ("weights", "update", "epoch-1 loss"):
    # tensor by tensor: within K_SENS x its worst sensitivity + FLOOR
    ours_c = ours_err[check]
    sens_c = {n: max(run_err[check][n] for run_err in sens) for n in ours_c}
    tol = {n: K_SENS * sens_c[n] + FLOOR for n in ours_c}
    e = max(ours_c, key=ours_c.get)
    t = max(ours_c, key=lambda n: ours_c[n] / tol[n])
    bad = [n for n in ours_c if ours_c[n] > tol[n]]
    failures += len(bad)
    print(f"{check:13s} worst rel err {ours_c[e]:.2e} ({e}); nearest its tol: {t} {ours_c[t]:.2e}, tol {K_SENS} x "
          f"sensitivity {sens_c[t]:.2e} + {FLOOR:.0e} = {tol[t]:.2e} (worst sensitivity {max(sens_c.values()):.2e}) "
          + ("ok" if not bad else f"FAIL ({len(bad)} of {len(ours_c)})"))
    for n in bad:
        print(f"    {n:24s} rel err {ours_c[n]:.2e} > tol {tol[n]:.2e} (sensitivity {sens_c[n]:.2e})")
print(f"train parity: epoch-1 loss {loss_e1:.6f} vs torch {ref[1]:.6f}; {failures} failures")
sys.exit(1 if failures else 0)
