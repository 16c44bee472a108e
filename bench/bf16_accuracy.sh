#!/bin/sh
# bf16 accuracy check (issue: bf16 must reach fp32's validation accuracy within
# 1 point, with agreeing loss curves) on the demo's Fashion-MNIST task, both stages:
#  1. full training of VGG16 (every conv layer in bf16) on the 8 pretraining classes;
#  2. the Keras example's fine-tune (frozen base, new head, batch 2) from each stage-1 model.
# Prints both runs' history side by side and the differences; with several seeds
# (SEEDS="1 2 3"), each seed's final and best accuracy and the means over seeds, since
# one run's accuracy moves by a few validation images between builds and seeds.
# usage: bench/bf16_accuracy.sh [loupe] [workdir]   (EPOCHS1, EPOCHS2 set the epochs)
set -eu
LOUPE=${1:-build/loupe}
W=${2:-/tmp/loupe-bf16-accuracy}
E1=${EPOCHS1:-5}
E2=${EPOCHS2:-40}
SEEDS=${SEEDS:-1}
mkdir -p "$W"
[ -d "$W/data/pretrain" ] || $LOUPE fashion --pretrain --per-class 300 --out "$W/data/pretrain" >/dev/null
[ -d "$W/data/pn" ] || $LOUPE fashion --out "$W/data/pn" >/dev/null
for s in $SEEDS; do
    for pr in fp32 bf16; do
        rm -rf "$W/pre-$pr-s$s" "$W/seed-$pr-s$s"
        $LOUPE train "$W/data/pretrain" --run "$W/pre-$pr-s$s" --model vgg16 --top none --head gap,dense --size 32x32 \
            --epochs "$E1" --batch 32 --optimizer adam --lr 0.0005 --seed "$s" --precision "$pr" --tensorboard off \
            >"$W/pre-$pr-s$s.log" 2>&1
        $LOUPE train "$W/data/pn" --run "$W/seed-$pr-s$s" --model vgg16 --top none \
            --head flatten,dense:256:relu,dropout:0.5,dense --weights "$W/pre-$pr-s$s/checkpoints/best.safetensors" \
            --freeze base --size 32x32 --preprocess rescale --batch 2 --epochs "$E2" --optimizer sgd --lr 0.0003 \
            --momentum 0.9 --seed "$s" --precision "$pr" --tensorboard off >"$W/seed-$pr-s$s.log" 2>&1
    done
done
set -- $SEEDS
grep -h "^Precision" "$W/pre-bf16-s$1.log" || true
/usr/bin/python3 - "$W" $SEEDS <<'PY'
import csv, sys
w, seeds = sys.argv[1], sys.argv[2:]
def hist(run):
    with open("%s/%s/history.csv" % (w, run)) as f:
        return list(csv.DictReader(f))
def col(rows, k):
    return [float(r[k]) for r in rows]
for stage in ("pre", "seed"):
    runs = {pr: [hist("%s-%s-s%s" % (stage, pr, s)) for s in seeds] for pr in ("fp32", "bf16")}
    n = min(len(h) for pr in runs for h in runs[pr])
    def mean(pr, k, e):
        return sum(col(h, k)[e] for h in runs[pr]) / len(seeds)
    label = "" if len(seeds) == 1 else " (means over seeds %s)" % " ".join(seeds)
    print("\n%s%s: epoch  fp32 val_loss val_acc | bf16 val_loss val_acc | d_loss d_acc" % (stage, label))
    for e in range(n):
        la, aa, lb, ab = mean("fp32", "val_loss", e), mean("fp32", "val_accuracy", e), mean("bf16", "val_loss", e), mean("bf16", "val_accuracy", e)
        print("  %3d   %8.4f %7.4f | %8.4f %7.4f | %+7.4f %+6.4f" % (e + 1, la, aa, lb, ab, lb - la, ab - aa))
    fin = {pr: [col(h, "val_accuracy")[n - 1] for h in runs[pr]] for pr in runs}
    best = {pr: [max(col(h, "val_accuracy")[:n]) for h in runs[pr]] for pr in runs}
    if len(seeds) > 1:
        for i, s in enumerate(seeds):
            print("  seed %s: final fp32 %.4f bf16 %.4f (%+.2f points); best %.4f vs %.4f (%+.2f points)" %
                  (s, fin["fp32"][i], fin["bf16"][i], 100 * (fin["bf16"][i] - fin["fp32"][i]), best["fp32"][i], best["bf16"][i],
                   100 * (best["bf16"][i] - best["fp32"][i])))
    m = lambda v: sum(v) / len(v)
    print("%s final val_accuracy fp32 %.4f bf16 %.4f (diff %+.2f points); best %.4f vs %.4f (%+.2f points)%s" %
          (stage, m(fin["fp32"]), m(fin["bf16"]), 100 * (m(fin["bf16"]) - m(fin["fp32"])), m(best["fp32"]), m(best["bf16"]),
           100 * (m(best["bf16"]) - m(best["fp32"])), label))
PY
