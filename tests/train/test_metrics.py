"""Evaluation metrics against independent NumPy computations (ROC-AUC by the
trapezoid rule over thresholds, i.e. the definition, not the rank formula we use; the
loss as float64 log-sum-exp of the logits). Some trials scale the logits so that a
confident wrong answer's float probability underflows to 0: the loss must still be the
exact mean (an evaluate that floored the probability understated it). Non-finite
logits are refused, not turned into figures."""
import subprocess, sys
import numpy as np

driver = sys.argv[1]
rng = np.random.default_rng(3)
failures = 0

def roc_auc_trapezoid(score, y):
    thr = np.unique(score)[::-1]
    P, N = (y == 1).sum(), (y == 0).sum()
    tpr, fpr = [0.0], [0.0]
    for t in thr:
        pred = score >= t
        tpr.append((pred & (y == 1)).sum() / P)
        fpr.append((pred & (y == 0)).sum() / N)
    return np.trapz(tpr, fpr)

for trial in range(20):
    k = 2 if trial < 12 else int(rng.integers(3, 6))
    n = int(rng.integers(5, 60))
    logits = rng.normal(size=(n, k)).astype(np.float32)
    if trial % 3 == 0:
        logits = np.round(logits, 1)  # ties in scores
    if trial % 4 == 1:
        logits = (logits * 200).astype(np.float32)  # p of the wrong answers below float's range
    T = 1.0 if trial % 5 else 1.7
    z = logits.astype(np.float64) / T
    zs = z - z.max(1, keepdims=True)
    p = (np.exp(zs) / np.exp(zs).sum(1, keepdims=True)).astype(np.float32)
    y = rng.integers(0, k, size=n)
    y[0], y[1] = 0, 1
    text = f"{n} {k} {T!r}\n" + "\n".join(f"{y[i]} " + " ".join(repr(float(v)) for v in logits[i]) for i in range(n))
    out = subprocess.run([driver], input=text, capture_output=True, text=True, check=True).stdout.split("\n")
    loss, acc, auc = map(float, out[0].split())
    pred = p.argmax(1)
    exp_loss = float(np.mean(np.log(np.exp(zs).sum(1)) - zs[np.arange(n), y]))
    exp_acc = float(np.mean(pred == y))
    ok = abs(loss - exp_loss) < 1e-9 * max(1.0, exp_loss) and abs(acc - exp_acc) < 1e-12
    if k == 2:
        exp_auc = roc_auc_trapezoid(p[:, 1].astype(np.float64), y)
        ok = ok and abs(auc - exp_auc) < 1e-9
    for c in range(k):
        pr, rc, f1, sup = out[1 + c].split()
        tp = int(((pred == c) & (y == c)).sum())
        ep = tp / max((pred == c).sum(), 1) if (pred == c).sum() else 0.0
        er = tp / (y == c).sum() if (y == c).sum() else 0.0
        ef = 2 * ep * er / (ep + er) if ep + er > 0 else 0.0
        ok = ok and abs(float(pr) - ep) < 1e-9 and abs(float(rc) - er) < 1e-9 and abs(float(f1) - ef) < 1e-9 and int(sup) == (y == c).sum()
    cm = np.zeros((k, k), int)
    for a, b in zip(y, pred):
        cm[a, b] += 1
    ok = ok and list(map(int, out[1 + k].split())) == cm.flatten().tolist()
    if not ok:
        failures += 1
        print(f"FAIL trial {trial}: got {out[:2]} expected loss {exp_loss} acc {exp_acc}")
    if trial % 4 == 1 and not (p[np.arange(n), y] == 0).any():
        failures += 1
        print(f"FAIL trial {trial}: no probability underflowed: the trial does not test the exact loss")

# a NaN or Inf logit (damaged weights, a diverged run): refused, naming the image
for bad in ("nan", "inf"):
    r = subprocess.run([driver], input="3 2 1.0\n0 0.5 1.5\n1 %s 0.1\n1 2.0 0.3\n" % bad, capture_output=True, text=True)
    if r.returncode != 1 or "NaN or Inf for image 2" not in r.stderr:
        failures += 1
        print(f"FAIL: a {bad} logit: exit {r.returncode}, {r.stderr.strip()!r} (want exit 1 naming image 2)")
print("metrics: %d failures" % failures)
sys.exit(1 if failures else 0)
