#!/bin/sh
# Batch normalization's kernels as lp_batchnorm picks them (ours, src/backend/batchnorm_fused.c,
# in a net with ReLU6 and wherever SiLU follows; else oneDNN's) against oneDNN's alone
# (LOUPE_BATCHNORM=onednn, ReLU6 or SiLU as an eltwise pass after it): the same training
# benchmark run alternately with each, ROUNDS
# times, the best images/s of each printed (this shared machine's noise is larger than the
# difference in a single run).
# usage: bench/batchnorm_ab.sh [--model M] [--size 224] [--batch 2] [--steps 20] [--rounds 4]
#        [--loupe PATH]    (ONEDNN_MAX_CPU_ISA caps both as usual)
set -eu
LOUPE=build/loupe model=mobilenet_v2 size=224 batch=2 steps=20 rounds=4
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift ;;
    --size) size=$2; shift ;;
    --batch) batch=$2; shift ;;
    --steps) steps=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --loupe) LOUPE=$2; shift ;;
    *) echo "batchnorm_ab.sh: unknown option $1"; exit 2 ;;
    esac
    shift
done
run() {
    "$LOUPE" bench --model "$model" --top keep --size "${size}x$size" --batch "$batch" --steps "$steps" --warmup 2 |
        sed -n 's/^images\/s: //p'
}
best_ours=0 best_onednn=0
for _ in $(seq "$rounds"); do
    a=$(LOUPE_BATCHNORM=onednn run)
    b=$(run)
    best_onednn=$(awk -v x="$a" -v y="$best_onednn" 'BEGIN { print (x > y ? x : y) }')
    best_ours=$(awk -v x="$b" -v y="$best_ours" 'BEGIN { print (x > y ? x : y) }')
done
"$LOUPE" bench --model "$model" --size 32x32 --batch 2 --steps 1 --warmup 0 | grep '^CPU:' || true
echo "$model ${size}x$size batch $batch, best of $rounds, training images/s: oneDNN's batch norm $best_onednn, as picked $best_ours"
