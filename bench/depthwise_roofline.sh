#!/bin/sh
# Roofline of the depthwise convolutions (MobileNetV2, EfficientNet-B0): per layer, the bytes
# a training step's forward and backward must move at least (fp32: forward reads the input
# and writes the output; backward reads dy and writes dx, and reads the input and dy again
# for the weights' gradient), the time `loupe bench --per-layer` measures inside the step,
# the bandwidth that makes, and that against STREAM's triad on the same threads.
# usage: bench/depthwise_roofline.sh [--model mobilenet_v2|efficientnet_b0] [--size 224] [--batch 16]
#        [--steps 3] [--loupe PATH]    (ONEDNN_MAX_CPU_ISA caps loupe as usual)
set -eu
HERE=$(dirname "$0")
LOUPE=build/loupe model=mobilenet_v2 size=224 batch=16 steps=3 T=${THREADS:-$(nproc)}
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift ;;
    --size) size=$2; shift ;;
    --batch) batch=$2; shift ;;
    --steps) steps=$2; shift ;;
    --loupe) LOUPE=$2; shift ;;
    *) echo "depthwise_roofline.sh: unknown option $1"; exit 2 ;;
    esac
    shift
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -fopenmp "$HERE/stream_triad.c" -o "$tmp/triad"
bw=$("$tmp/triad" "$T" | sed -n 's/^triad GB\/s: \([0-9.]*\).*/\1/p')
"$LOUPE" bench --model "$model" --top keep --size "${size}x$size" --batch "$batch" --steps "$steps" --warmup 1 --threads "$T" \
    --per-layer > "$tmp/bench.txt"
grep -E '^CPU:|^images/s' "$tmp/bench.txt"
echo "STREAM triad, $T thread(s): $bw GB/s"
# rows: name kind output step_fwd step_bwd ...; a depthwise layer's input is the row before's output
awk -v n="$batch" -v bw="$bw" '
function elems(s,   a) { split(s, a, "x"); return a[1] * a[2] * a[3] }
$2 == "Conv2d" && $NF ~ /^jit_dw/ {
    inb = 4.0 * n * elems(prev); outb = 4.0 * n * elems($3)
    fb = inb + outb; bb = 2 * inb + 2 * outb
    gf = fb / ($4 / 1e3) / 1e9; gb = bb / ($5 / 1e3) / 1e9
    printf "%-24s %-12s %-12s %7.1f MB %6.2f ms %6.1f GB/s %4.0f%%   %7.1f MB %6.2f ms %6.1f GB/s %4.0f%%\n", $1, prev, $3,
        fb / 1e6, $4, gf, 100 * gf / bw, bb / 1e6, $5, gb, 100 * gb / bw
    tf += $4; tb += $5; sf += fb; sb += bb
}
NF >= 5 && $3 ~ /^[0-9]+x[0-9]+x[0-9]+$/ { prev = $3 }
END {
    printf "all depthwise layers: forward %.1f ms (%.0f%% of the triad bound %.1f ms), backward %.1f ms (%.0f%% of %.1f ms)\n",
        tf, 100 * (sf / bw / 1e6) / tf, sf / bw / 1e6, tb, 100 * (sb / bw / 1e6) / tb, sb / bw / 1e6
}' "$tmp/bench.txt" | sed '1i layer                    input        output       forward: bytes, time, bandwidth, of triad   backward: bytes, time, bandwidth, of triad'
grep -E '^step:' "$tmp/bench.txt"
