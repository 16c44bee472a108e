#!/bin/sh
# One training configuration, loupe (fp32, bf16) next to PyTorch 1.13 (fp32, fp32
# channels_last, bf16 autocast, bf16 autocast + channels_last), in one go, with the
# ratios and each process's peak memory. Same model, synthetic batch, SGD momentum 0.9,
# same thread count.
# usage: bench/bench_vs_torch.sh [--top none|keep] [--head SPEC] [--size WxH] [--batch N]
#                                [--steps K] [--loupe PATH] [--per-layer] [--repeat R]
# e.g.   bench/bench_vs_torch.sh --top none --head flatten,dense --size 224x224 --batch 16 --steps 3
# Figures on a shared machine are noisy: the runs alternate loupe / PyTorch so that a
# slow minute hits both. --repeat R runs the six R times over, alternating, and keeps
# each one's best (least disturbed) images/s and its highest peak memory.
set -eu
HERE=$(dirname "$0")
LOUPE=build/loupe PY=${PYTHON:-/usr/bin/python3} T=${THREADS:-$(nproc)}
top=none head=flatten,dense size=224x224 batch=16 steps=3 per_layer="" repeat=1
while [ $# -gt 0 ]; do
    case $1 in
    --top) top=$2; shift ;;
    --head) head=$2; shift ;;
    --size) size=$2; shift ;;
    --batch) batch=$2; shift ;;
    --steps) steps=$2; shift ;;
    --loupe) LOUPE=$2; shift ;;
    --per-layer) per_layer=--per-layer ;;
    --repeat) repeat=$2; shift ;;
    *) echo "bench_vs_torch.sh: unknown option $1 (see the comment at the top)"; exit 2 ;;
    esac
    shift
done
cfg="--model vgg16 --top $top --head $head --size $size --batch $batch --steps $steps --warmup 1 --threads $T"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
loupe_run() { "$LOUPE" bench $cfg --precision "$1" $2 >"$out/loupe-$1.$r" 2>&1 || { cat "$out/loupe-$1.$r"; exit 1; }; }
torch_run() { "$PY" "$HERE/torch_bench.py" $cfg $2 >"$out/torch-$1.$r" 2>/dev/null || { echo "torch $1 failed"; exit 1; }; }
r=1
while [ "$r" -le "$repeat" ]; do
    loupe_run fp32 ""
    torch_run fp32 ""
    loupe_run bf16 "$([ "$r" = 1 ] && echo "$per_layer")"
    torch_run fp32_cl "--channels-last"
    torch_run bf16 "--bf16"
    torch_run bf16_cl "--bf16 --channels-last"
    r=$((r + 1))
done
# best images/s of the repeats (its output kept as $out/NAME), highest peak memory
for f in loupe-fp32 loupe-bf16 torch-fp32 torch-fp32_cl torch-bf16 torch-bf16_cl; do
    best=$(for g in "$out/$f".*; do printf "%s %s\n" "$(sed -n 's/^images\/s: //p' "$g")" "$g"; done | sort -g | tail -1 | cut -d' ' -f2)
    cp "$best" "$out/$f"
    peak=$(cat "$out/$f".* | sed -n 's/^peak memory (RSS): \([0-9]*\) MB/\1/p' | sort -n | tail -1)
    sed -i "s/^peak memory (RSS): .*/peak memory (RSS): $peak MB/" "$out/$f"
done
ips() { sed -n 's/^images\/s: //p' "$out/$1"; }
mem() { sed -n 's/^peak memory (RSS): \([0-9]*\) MB/\1/p' "$out/$1"; }
[ "$repeat" -gt 1 ] && echo "best of $repeat runs each"
echo "vgg16 top=$top head=$head $size batch $batch, $T threads, $steps timed steps (SGD momentum 0.9)"
printf "%-34s %10s %10s %10s %10s\n" "" "images/s" "peak MB" "loupe fp32" "loupe bf16"
for r in loupe-fp32 loupe-bf16 torch-fp32 torch-fp32_cl torch-bf16 torch-bf16_cl; do
    case $r in
    loupe-fp32) name="loupe fp32" ;;
    loupe-bf16) name="loupe bf16 (AMX)" ;;
    torch-fp32) name="PyTorch fp32" ;;
    torch-fp32_cl) name="PyTorch fp32 channels_last" ;;
    torch-bf16) name="PyTorch bf16 autocast" ;;
    torch-bf16_cl) name="PyTorch bf16 autocast channels_last" ;;
    esac
    a=$(ips "$r")
    awk -v n="$name" -v a="$a" -v m="$(mem "$r")" -v f="$(ips loupe-fp32)" -v b="$(ips loupe-bf16)" 'BEGIN {
        printf "%-34s %10.3f %10s %9.2fx %9.2fx\n", n, a, m, (a > 0 ? f / a : 0), (a > 0 ? b / a : 0) }'
done
echo "(the last two columns: loupe's images/s divided by that row's)"
grep -h "^step:" "$out/loupe-fp32" "$out/loupe-bf16" | sed 's/^/loupe /'
[ -n "$per_layer" ] && sed -n '/^per layer/,$p' "$out/loupe-bf16.1"
exit 0
