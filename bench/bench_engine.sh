#!/bin/sh
# VGG16 fp32 training throughput, loupe vs PyTorch 1.13 on the same synthetic batch
# (same model, SGD momentum 0.9), side by side.
# usage: bench/bench_engine.sh [path/to/loupe]   (default build/loupe)
# STEPS224 / STEPS32 set the timed steps (PyTorch at 224 is slow: ~6 s per step of 8),
# THREADS the thread count of both (default: all cores). On a shared machine, run it
# when idle: OpenMP with all cores suffers badly from other processes.
set -eu
LOUPE=${1:-build/loupe}
PY=${PYTHON:-/usr/bin/python3}
HERE=$(dirname "$0")
S224=${STEPS224:-2}
S32=${STEPS32:-3}
T=${THREADS:-$(nproc)} # the same thread count for both
printf "%-46s %12s %12s %8s\n" "configuration (fp32, $T threads)" "loupe img/s" "torch img/s" "ratio"
run() { # label top head size batch steps
    l=$("$LOUPE" bench --model vgg16 --top "$2" --head "$3" --size "$4" --batch "$5" --steps "$6" --warmup 1 --threads "$T" | sed -n 's/^images\/s: //p')
    t=$("$PY" "$HERE/torch_bench.py" --model vgg16 --top "$2" --head "$3" --size "$4" --batch "$5" --steps "$6" --warmup 1 --threads "$T" | sed -n 's/^images\/s: //p')
    r=$(awk -v a="$l" -v b="$t" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf "%-46s %12s %12s %8s\n" "$1" "$l" "$t" "${r}x"
}
run "vgg16 top=keep 224x224 batch 8" keep flatten,dense 224x224 8 "$S224"
run "vgg16 top=none flatten,dense:2 224x224 batch 8" none flatten,dense 224x224 8 "$S224"
run "vgg16 top=keep 32x32 batch 32" keep flatten,dense 32x32 32 "$S32"
run "vgg16 top=none flatten,dense:2 32x32 batch 32" none flatten,dense 32x32 32 "$S32"
run "vgg16 top=keep 32x32 batch 2 (the Keras example's batch)" keep flatten,dense 32x32 2 "$S32"
