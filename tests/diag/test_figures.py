#!/usr/bin/env python3
"""diag_figures: the diag layer's figures (ECE, MCE, reliability bins, Brier, NLL,
loss share of misclassified images, mean confidences, temperature scaling, Wilson
interval) against an independent numpy/torch computation on hand-made and random
prediction tables. Usage: test_figures.py PATH/TO/diag_probe"""
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

PROBE = sys.argv[1]
FAIL = []
M = 15


def check(cond, msg):
    if not cond:
        FAIL.append(msg)
        print("FAIL:", msg)


def close(a, b, tol, what):
    ok = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1.0, abs(b))
    check(ok, f"{what}: loupe {a!r} vs reference {b!r}")


def run_probe(y, p):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"{len(y)} {p.shape[1]}\n")
        for yi, row in zip(y, p):
            f.write(str(int(yi)) + " " + " ".join(repr(float(v)) for v in row) + "\n")
        name = f.name
    out = subprocess.run([PROBE, "table", name], capture_output=True, text=True)
    os.unlink(name)
    if out.returncode != 0:
        raise SystemExit(f"diag_probe failed: {out.stderr}")
    res, bins = {}, {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts[0].startswith("bin"):
            bins[int(parts[0][3:])] = (int(parts[1]), float(parts[2]), float(parts[3]))
        else:
            res[parts[0]] = float(parts[1])
    return res, bins


def reference(y, p):
    n, k = p.shape
    pred = np.argmax(p, axis=1)  # first index on ties
    conf = p[np.arange(n), pred]
    correct = pred == y
    loss = -np.log(np.maximum(p[np.arange(n), y], 1e-30))
    edges = np.arange(1, M + 1) / M
    b = np.minimum(np.searchsorted(edges, conf, side="left"), M - 1)  # bin (lo, hi]
    ece, mce, bins = 0.0, 0.0, {}
    for m in range(M):
        sel = b == m
        if sel.sum():
            gap = abs(correct[sel].mean() - conf[sel].mean())
            ece += sel.sum() / n * gap
            mce = max(mce, gap)
            bins[m] = (int(sel.sum()), conf[sel].mean(), correct[sel].mean())
        else:
            bins[m] = (0, 0.0, 0.0)
    onehot = np.eye(k)[y]
    r = dict(ece=ece, mce=mce, brier=((p - onehot) ** 2).sum(1).mean(), nll=loss.mean(),
             accuracy=correct.mean(), share=loss[~correct].sum() / loss.sum() if loss.sum() > 0 else 0.0,
             conf_correct=conf[correct].mean() if correct.any() else float("nan"),
             conf_wrong=conf[~correct].mean() if (~correct).any() else float("nan"),
             n_wrong=int((~correct).sum()))
    return r, bins


def nll_at(y, p, T):
    z = torch.log(torch.clamp(torch.tensor(p, dtype=torch.float64), min=1e-30)) / T
    return torch.nn.functional.cross_entropy(z, torch.tensor(y), reduction="mean").item()


def torch_temperature(y, p):
    """LBFGS on log T (independent of loupe's Newton on 1/T)."""
    z = torch.log(torch.clamp(torch.tensor(p, dtype=torch.float64), min=1e-30))
    yt = torch.tensor(y)
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
    return math.exp(logt.item())


def check_table(name, y, p, temperature=True):
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    got, gbins = run_probe(y, p)
    ref, rbins = reference(y, p)
    for key in ("ece", "mce", "brier", "nll"):
        close(got[key], ref[key], 1e-12, f"{name}: {key}")
    for m in range(M):
        check(gbins[m][0] == rbins[m][0], f"{name}: bin {m} count {gbins[m][0]} vs {rbins[m][0]}")
        close(gbins[m][1], rbins[m][1], 1e-12, f"{name}: bin {m} confidence")
        close(gbins[m][2], rbins[m][2], 1e-12, f"{name}: bin {m} accuracy")
    # lp_diag_epoch_figures takes float32 probabilities: compare with the float32-rounded table
    ref32, _ = reference(y, p.astype(np.float32).astype(np.float64))
    close(got["f_accuracy"], ref32["accuracy"], 1e-12, f"{name}: epoch figures accuracy")
    close(got["f_nll"], ref32["nll"], 1e-9, f"{name}: epoch figures nll")
    close(got["f_loss_share_wrong"], ref32["share"], 1e-9, f"{name}: epoch figures loss share wrong")
    close(got["f_conf_correct"], ref32["conf_correct"], 1e-9, f"{name}: epoch figures conf correct")
    close(got["f_conf_wrong"], ref32["conf_wrong"], 1e-9, f"{name}: epoch figures conf wrong")
    close(got["f_ece"], ref32["ece"], 1e-9, f"{name}: epoch figures ece")
    check(int(got["f_n_wrong"]) == ref32["n_wrong"], f"{name}: n_wrong")
    check(got["bad_label_rejected"] == 1, f"{name}: out-of-range label not rejected")
    if temperature:
        T = got["temperature"]
        Tt = torch_temperature(y, p)
        close(T, Tt, 1e-4, f"{name}: temperature vs torch LBFGS")
        # no point of a fine log grid beats loupe's T
        grid = np.exp(np.linspace(math.log(0.02), math.log(50), 4001))
        best = min(nll_at(y, p, t) for t in grid)
        check(nll_at(y, p, T) <= best + 1e-12, f"{name}: NLL at T={T} above grid minimum {best}")
        close(got["nll_after"], nll_at(y, p, T), 1e-9, f"{name}: nll after scaling")
        q = torch.softmax(torch.log(torch.clamp(torch.tensor(p), min=1e-30)) / T, dim=1).numpy()
        r2, _ = reference(y, q)
        close(got["ece_after"], r2["ece"], 1e-9, f"{name}: ece after scaling")
        check(got["temperature_at_bound"] == 0, f"{name}: temperature at bound")
    return got


# 1. hand-made binary table, answers worked by hand:
#   conf: .9 (right), .8 (wrong, true p .2), .6 (right), .7 (wrong, true p .3)
y = [0, 0, 1, 1]
p = [[.9, .1], [.2, .8], [.4, .6], [.7, .3]]
got = check_table("hand", y, p)
# bins (8/15,9/15] holds .6 (acc 1); (10/15,11/15] holds .7 (acc 0); (11/15,12/15] holds .8 (acc 0); (13/15,14/15] holds .9 (acc 1)
ece_hand = (abs(1 - .6) + abs(0 - .7) + abs(0 - .8) + abs(1 - .9)) / 4
close(got["ece"], ece_hand, 1e-12, "hand: ECE by hand")
close(got["mce"], .8, 1e-12, "hand: MCE by hand")
close(got["brier"], (2 * .01 + 2 * .64 + 2 * .16 + 2 * .49) / 4, 1e-12, "hand: Brier by hand")
l = [-math.log(.9), -math.log(.2), -math.log(.6), -math.log(.3)]
close(got["nll"], sum(l) / 4, 1e-12, "hand: NLL by hand")
close(got["f_loss_share_wrong"], (l[1] + l[3]) / sum(l), 1e-6, "hand: loss share by hand")
close(got["f_conf_wrong"], .75, 1e-6, "hand: conf wrong by hand")

# 2. random tables: binary and 5 classes, overconfident (peaked) and soft
rng = np.random.default_rng(1234)
for trial, (n, k, scale) in enumerate([(52, 2, 6.0), (200, 5, 3.0), (500, 10, 10.0), (31, 3, 0.5), (1000, 2, 2.0)]):
    logits = rng.normal(size=(n, k)) * scale
    y = rng.integers(0, k, size=n)
    logits[np.arange(n), y] += scale * 0.8  # better than chance
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    check_table(f"random{trial} n={n} k={k}", y, p)

# 3. exact ties: argmax takes the first class, as numpy does
# (the second image is confidently wrong, the rest carry no information: T runs to the upper bound)
got = check_table("ties", [1, 0, 1], [[.5, .5], [.25, .75], [1 / 3, 2 / 3]], temperature=False)
check(got["temperature_at_bound"] == 1 and got["temperature"] >= 99.999, f"ties temperature {got['temperature']}")

# 4. every image correct: the fit runs to the lower bound (sharper is always better)
got, _ = run_probe(np.array([0, 1, 0]), np.array([[.9, .1], [.2, .8], [.7, .3]]))
check(got["temperature_at_bound"] == 1 and got["temperature"] <= 0.0100001, f"all-correct temperature {got['temperature']}")
# every row uniform: flat objective, T = 1
got, _ = run_probe(np.array([0, 1]), np.array([[.5, .5], [.5, .5]]))
close(got["temperature"], 1.0, 1e-12, "uniform rows temperature")
# the same with 10 classes as written to a CSV (0.1 does not sum to 1 exactly in float64;
# the derivative's sign is rounding's): still flat, not a fit that runs to a bound
for k in (3, 10):
    got, _ = run_probe(np.array([0, 1, 2]), np.full((3, k), float(np.float32(1 / k))))
    check(got["temperature"] == 1.0 and got["temperature_at_bound"] == 0,
          f"uniform rows of {k} classes: temperature {got['temperature']} at bound {got['temperature_at_bound']}, want 1, 0")

# 5. Wilson interval: endpoints are the roots of (phat - p)^2 = z^2 p (1 - p) / n
for x, n in [(46, 52), (0, 10), (10, 10), (500, 1000), (3, 7)]:
    out = subprocess.run([PROBE, "wilson", str(x), str(n)], capture_output=True, text=True, check=True).stdout.split()
    lo, hi = float(out[1]), float(out[3])
    z, ph = 1.959963984540054, x / n
    a = 1 + z * z / n
    roots = sorted(np.roots([a, -(2 * ph + z * z / n), ph * ph]).real)
    close(lo, max(0.0, roots[0]), 1e-9, f"wilson {x}/{n} low")
    close(hi, min(1.0, roots[1]), 1e-9, f"wilson {x}/{n} high")

if FAIL:
    print(f"{len(FAIL)} failure(s)")
    sys.exit(1)
print("diag_figures: all checks passed")
