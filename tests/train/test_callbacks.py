"""EarlyStopping, ReduceLROnPlateau and ModelCheckpoint(save_best_only) against a
transcription of Keras 2.11's on_epoch_end logic (keras/callbacks.py), the
independent oracle here, on random monitored sequences."""
import os, random, subprocess, sys
sys.path.insert(0, os.path.dirname(__file__))

driver = sys.argv[1]

from keras_ref import KerasEarlyStopping, KerasReduceLR

failures = 0
rng = random.Random(5)
for trial in range(60):
    maximize = trial % 2
    patience, rl_pat, factor = rng.randint(1, 4), rng.randint(1, 3), rng.choice([0.5, 0.2, 0.1])
    n = rng.randint(3, 25)
    vals = []
    v = rng.uniform(0.5, 1.0)
    for _ in range(n):  # noisy plateaus with repeats, to exercise ties and min_delta
        v += rng.choice([-0.1, -0.00005, 0.0, 0.00005, 0.05])
        vals.append(round(v, 6))
    out = subprocess.run([driver, str(patience), str(factor), str(rl_pat), str(maximize)],
                         input="\n".join(map(str, vals)), capture_output=True, text=True, check=True).stdout.split("\n")
    es, rl = KerasEarlyStopping(patience, maximize), KerasReduceLR(factor, rl_pat, maximize)
    lr, best = 0.1, (-float("inf") if maximize else float("inf"))
    for i, val in enumerate(vals):
        stop = es.on_epoch_end(i, val)
        lr = rl.on_epoch_end(val, lr)
        saved = (val > best) if maximize else (val < best)
        if saved:
            best = val
        got = out[i].split()
        exp = [str(i + 1), str(int(stop)), None, str(int(saved))]
        if got[0] != exp[0] or got[1] != exp[1] or got[3] != exp[3] or abs(float(got[2]) - lr) > 1e-12 * lr:
            print(f"FAIL trial {trial} epoch {i+1} values {vals[:i+1]}: got {got}, keras stop={stop} lr={lr} save={saved}")
            failures += 1
            break
        if stop:
            break
print("callbacks: %d failures" % failures)
sys.exit(1 if failures else 0)
