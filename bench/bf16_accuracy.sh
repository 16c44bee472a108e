#!/bin/sh
# bf16 accuracy check (issue: bf16 must reach fp32's validation accuracy within
# 1 point, with agreeing loss curves) on the demo's Fashion-MNIST task, both stages:
#  1. full training of VGG16 (every conv layer in bf16) on the 8 pretraining classes;
#  2. the seed's fine-tune (frozen base, new head, batch 2) from each stage-1 model.
# Prints both runs' history side by side and the differences.
# usage: bench/bf16_accuracy.sh [loupe] [workdir]   (EPOCHS1, EPOCHS2 set the epochs)
set -eu
LOUPE=${1:-build/loupe}
W=${2:-/tmp/loupe-bf16-accuracy}
E1=${EPOCHS1:-5}
E2=${EPOCHS2:-40}
mkdir -p "$W"
[ -d "$W/data/pretrain" ] || $LOUPE fashion --pretrain --per-class 300 --out "$W/data/pretrain" >/dev/null
[ -d "$W/data/pn" ] || $LOUPE fashion --out "$W/data/pn" >/dev/null
for pr in fp32 bf16; do
    rm -rf "$W/pre-$pr" "$W/seed-$pr"
    $LOUPE train "$W/data/pretrain" --run "$W/pre-$pr" --model vgg16 --top none --head gap,dense --size 32x32 \
        --epochs "$E1" --batch 32 --optimizer adam --lr 0.0005 --seed 1 --precision "$pr" --tensorboard off >"$W/pre-$pr.log" 2>&1
    $LOUPE train "$W/data/pn" --run "$W/seed-$pr" --model vgg16 --top none \
        --head flatten,dense:256:relu,dropout:0.5,dense --weights "$W/pre-$pr/checkpoints/best.safetensors" \
        --freeze base --size 32x32 --preprocess rescale --batch 2 --epochs "$E2" --optimizer sgd --lr 0.0003 \
        --momentum 0.9 --seed 1 --precision "$pr" --tensorboard off >"$W/seed-$pr.log" 2>&1
done
grep -h "^Precision" "$W/pre-bf16.log" || true
/usr/bin/python3 - "$W" <<'PY'
import csv, sys
w = sys.argv[1]
def hist(run):
    with open("%s/%s/history.csv" % (w, run)) as f:
        return list(csv.DictReader(f))
for stage in ("pre", "seed"):
    a, b = hist(stage + "-fp32"), hist(stage + "-bf16")
    print("\n%s: epoch  fp32 val_loss val_acc | bf16 val_loss val_acc | d_loss d_acc" % stage)
    for ra, rb in zip(a, b):
        la, aa, lb, ab = (float(r[k]) for r in (ra, rb) for k in ("val_loss", "val_accuracy"))
        print("  %3s   %8.4f %7.4f | %8.4f %7.4f | %+7.4f %+6.4f" % (ra["epoch"], la, aa, lb, ab, lb - la, ab - aa))
    fa, fb = float(a[-1]["val_accuracy"]), float(b[-1]["val_accuracy"])
    ba, bb = max(float(r["val_accuracy"]) for r in a), max(float(r["val_accuracy"]) for r in b)
    print("%s final val_accuracy fp32 %.4f bf16 %.4f (diff %+.2f points); best %.4f vs %.4f (%+.2f points)" %
          (stage, fa, fb, 100 * (fb - fa), ba, bb, 100 * (bb - ba)))
PY
