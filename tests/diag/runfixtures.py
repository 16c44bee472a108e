"""Synthetic run directories for the diag tests (the contract of issue 4:
run.json, history.csv, valid_predictions.csv, checkpoints/), plus an
independent reference computation of the figures `loupe diagnose` reports."""
import json
import math
import os

import numpy as np
import torch

HISTORY_HEADER = "epoch,loss,accuracy,val_loss,val_accuracy,lr"


def write_run(run, classes, probs, labels, paths, history, config=None, counts=None, run_json=True, epochs=None, extra=None):
    """probs: (E, N, K) array; labels: N ints; history: list of dicts with
    loss, accuracy (val figures are computed from probs unless given); extra: more
    top-level run.json keys (bn_check)."""
    os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
    E, N, K = probs.shape
    epochs = epochs or list(range(1, E + 1))
    if run_json:
        cfg = {"model": "vgg16", "preprocess": "rescale", "weights": None, "weights_preprocess": None,
               "lr": 0.001, "batch": 2, "epochs": E, "monitor": "val_loss", "early_stop": 0}
        cfg.update(config or {})
        if counts is None:
            counts = {"train": {c: 100 for c in classes},
                      "valid": {c: int((np.asarray(labels) == i).sum()) for i, c in enumerate(classes)}}
        with open(os.path.join(run, "run.json"), "w") as f:
            doc = {"classes": classes, "config": cfg, "counts": counts, "loupe_version": "0.1.0"}
            doc.update(extra or {})
            json.dump(doc, f, indent=1)
    ref = [figures(probs[e], labels) for e in range(E)]
    with open(os.path.join(run, "history.csv"), "w") as f:
        f.write(HISTORY_HEADER + "\n")
        for e in range(E):
            h = history[e]
            vl = h.get("val_loss", ref[e]["nll"])
            va = h.get("val_accuracy", ref[e]["accuracy"])
            f.write(f"{epochs[e]},{h['loss']!r},{h['accuracy']!r},{vl!r},{va!r},{h.get('lr', 0.001)!r}\n")
    with open(os.path.join(run, "valid_predictions.csv"), "w") as f:
        f.write("epoch,path,label," + ",".join(f"p{k}" for k in range(K)) + "\n")
        for e in range(E):
            for i in range(N):
                f.write(f"{epochs[e]},{paths[i]},{labels[i]}," + ",".join(f"{v:.9g}" for v in probs[e, i]) + "\n")


def softmax_rows(logits):
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def rounded(probs):
    """What the CSV holds: probabilities printed with %.9g."""
    return np.vectorize(lambda v: float(f"{v:.9g}"))(probs)


def figures(p, y, bins=15):
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    n = len(y)
    pred = np.argmax(p, 1)
    conf = p[np.arange(n), pred]
    correct = pred == y
    loss = -np.log(np.maximum(p[np.arange(n), y], 1e-30))
    b = np.minimum(np.searchsorted(np.arange(1, bins + 1) / bins, conf, side="left"), bins - 1)
    ece = sum((b == m).sum() / n * abs(correct[b == m].mean() - conf[b == m].mean()) for m in range(bins) if (b == m).any())
    return dict(nll=loss.mean(), accuracy=correct.mean(), loss=loss, pred=pred, correct=correct, ece=ece,
                brier=((p - np.eye(p.shape[1])[y]) ** 2).sum(1).mean())


def temperature(p, y):
    """Reference fit: LBFGS on log T, then refined on a fine log grid."""
    z = torch.log(torch.clamp(torch.tensor(np.asarray(p), dtype=torch.float64), min=1e-30))
    yt = torch.tensor(np.asarray(y))
    logt = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logt], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / torch.exp(logt), yt)
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
    T = math.exp(logt.item())
    q = torch.softmax(z / T, 1).numpy()
    return T, q


def reference(probs, labels):
    """The headline figures of `loupe diagnose --json`, computed independently."""
    E = probs.shape[0]
    f = [figures(probs[e], labels) for e in range(E)]
    vl = np.array([x["nll"] for x in f])
    best = int(np.argmin(vl))
    last = E - 1
    wrong_last = ~f[last]["correct"]
    rise = vl[last] - vl[best]
    share = (f[last]["loss"][wrong_last] - f[best]["loss"][wrong_last]).sum() / (len(labels) * rise) if rise > 0 else None
    T, q = temperature(probs[last], labels)
    fq = figures(q, labels)
    return dict(best_epoch=best + 1, last_epoch=last + 1, val_loss_best=vl[best], val_loss_last=vl[last],
                rise_share_misclassified=share, ece=f[last]["ece"], nll=f[last]["nll"], brier=f[last]["brier"],
                temperature=T, ece_calibrated=fq["ece"], nll_calibrated=fq["nll"],
                misclassified=set(np.flatnonzero(wrong_last).tolist()),
                more_confidently_wrong=set(np.flatnonzero(wrong_last & (f[last]["loss"] > f[best]["loss"])).tolist()),
                accuracy_last=f[last]["accuracy"], per_epoch=f)


# ---- scenarios ---------------------------------------------------------------

def seed_story(run, preprocess="rescale", weights_preprocess="caffe"):
    """The seed user's case: 52 validation images, 50 epochs; accuracy flat at
    46/52 while val_loss rises after epoch ~16 because the 6 misclassified
    images get ever more confidently wrong. Weights expect caffe, run used rescale."""
    rng = np.random.default_rng(7)
    N, E = 52, 50
    labels = np.array([0] * 28 + [1] * 24)
    paths = [f"valid/{'negative' if l == 0 else 'positive'}/img_{i:03d}.png" for i, l in enumerate(labels)]
    wrong = np.array([3, 11, 20, 30, 41, 50])
    base = rng.uniform(-0.3, 0.5, N)
    ep = np.arange(1, E + 1)
    probs = np.zeros((E, N, 2))
    for i in range(N):
        if i in wrong:
            # margin of the true class: about -1.3 at epoch 16, about -6.8 at epoch 50
            m = -0.3 - abs(base[i]) - 0.0025 * ep ** 2
        else:
            # correct images: a little more confident every epoch
            m = 0.45 + base[i] + 0.12 * ep
        pt = 1 / (1 + np.exp(-m))
        probs[:, i, labels[i]] = pt
        probs[:, i, 1 - labels[i]] = 1 - pt
    probs = rounded(probs)
    history = [dict(loss=0.7 * math.exp(-e / 8) + 0.005, accuracy=min(1.0, 0.7 + 0.02 * e)) for e in ep]
    write_run(run, ["negative", "positive"], probs, labels, paths, history,
              config={"weights": "vgg16_imagenet.safetensors", "preprocess": preprocess,
                      "weights_preprocess": weights_preprocess})
    return probs, labels, paths


def single_class(run):
    """A model that predicts 'negative' for every image (accuracy = the prior 28/52)."""
    rng = np.random.default_rng(3)
    N, E = 52, 12
    labels = np.array([0] * 28 + [1] * 24)
    paths = [f"valid/{i}.jpg" for i in range(N)]
    p0 = rng.uniform(0.52, 0.6, size=(E, N))
    probs = rounded(np.stack([p0, 1 - p0], -1))
    history = [dict(loss=0.69 + 0.001 * rng.normal(), accuracy=0.55) for _ in range(E)]
    write_run(run, ["negative", "positive"], probs, labels, paths, history,
              counts={"train": {"negative": 154, "positive": 130}, "valid": {"negative": 28, "positive": 24}})
    return probs, labels, paths


def overfitting(run):
    """Training loss falls to ~0 while val_loss rises and val accuracy slips (3 classes, 300 images)."""
    rng = np.random.default_rng(11)
    N, E, K = 300, 30, 3
    labels = rng.integers(0, K, N)
    paths = [f"valid/c{l}/x{i}.png" for i, l in enumerate(labels)]
    hard = rng.uniform(size=N) < 0.2
    drift = rng.normal(size=(N, K))
    probs = np.zeros((E, N, K))
    for e in range(E):
        t = e + 1
        logits = drift * (0.3 + 0.12 * t)
        s = 2.5 * (1 - math.exp(-t / 4))
        logits[np.arange(N), labels] += np.where(hard, s - 0.35 * max(0, t - 8), s + 0.5)
        probs[e] = softmax_rows(logits)
    probs = rounded(probs)
    history = [dict(loss=1.1 * math.exp(-(e + 1) / 4) + 0.002, accuracy=min(1.0, 0.6 + 0.03 * (e + 1))) for e in range(E)]
    write_run(run, ["a", "b", "c"], probs, labels, paths, history)
    return probs, labels, paths


def healthy(run, n=2000, epochs=8):
    """A large, well-calibrated validation set with a falling val_loss: nothing to report."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, n)
    paths = [f"valid/{l}/{i}.png" for i, l in enumerate(labels)]
    probs = np.zeros((epochs, n, 2))
    score = rng.normal(size=n)
    for e in range(epochs):
        s = 0.5 + 0.25 * (e + 1)
        # draw the label from the model's own probability: calibrated by construction
        logit = s * score
        probs[e, :, 1] = 1 / (1 + np.exp(-logit))
        probs[e, :, 0] = 1 - probs[e, :, 1]
    p_last = probs[-1, :, 1]
    labels = (rng.uniform(size=n) < p_last).astype(int)
    probs = rounded(probs)
    history = [dict(loss=0.6 - 0.03 * e, accuracy=0.7 + 0.01 * e) for e in range(epochs)]
    write_run(run, ["cat", "dog"], probs, labels, paths, history, config={"weights": "w.safetensors", "preprocess": "caffe",
                                                                         "weights_preprocess": "caffe"})
    return probs, labels, paths


def lr_too_high(run):
    """Loss spikes then NaN at epoch 6; predictions NaN from epoch 6."""
    rng = np.random.default_rng(9)
    N, E = 60, 8
    labels = rng.integers(0, 2, N)
    paths = [f"v/{i}.png" for i in range(N)]
    probs = np.zeros((E, N, 2))
    for e in range(E):
        p1 = rng.uniform(0.2, 0.8, N)
        probs[e, :, 1] = p1
        probs[e, :, 0] = 1 - p1
    probs = rounded(probs)
    losses = [0.7, 0.65, 2.9, 0.9, 5.5, float("nan"), float("nan"), float("nan")]
    history = [dict(loss=l, accuracy=0.5) for l in losses]
    for e in range(5, E):
        history[e]["val_loss"] = float("nan")
    probs[5:] = np.nan
    write_run(run, ["a", "b"], probs, labels, paths, history, config={"lr": 0.5})
    return probs, labels, paths
