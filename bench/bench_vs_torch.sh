#!/bin/sh
# One training configuration, loupe (fp32, bf16) next to PyTorch 1.13 (fp32, fp32
# channels_last, bf16 autocast, bf16 autocast + channels_last), in one go, with the
# ratios and each process's peak memory. Same model, synthetic batch, optimizer
# (SGD momentum 0.9 unless --opt), same thread count.
# usage: bench/bench_vs_torch.sh [--model vgg16|resnet18|resnet50|mobilenet_v2|efficientnet_b0 (but vgg16: --top keep)]
#                                [--top none|keep] [--head SPEC] [--size WxH] [--batch N]
#                                [--steps K] [--loupe PATH] [--per-layer] [--repeat R]
#                                [--isa AVX2|AVX512_CORE|native] [--opt sgd|adam|adamw]
# e.g.   bench/bench_vs_torch.sh --top none --head flatten,dense --size 224x224 --batch 16 --steps 3
# Figures on a shared machine are noisy: the runs alternate loupe / PyTorch so that a
# slow minute hits both. --repeat R runs the six R times over, alternating, and keeps
# each one's best (least disturbed) images/s and its highest peak memory.
# --isa runs both as on a smaller CPU: ONEDNN_MAX_CPU_ISA caps loupe and PyTorch's
# bundled oneDNN alike, ATEN_CPU_CAPABILITY (avx2, avx512) PyTorch's own kernels;
# native (default) unsets both. The bf16 rows need native bf16 (AVX512-BF16 or AMX):
# below it they are skipped with a note (loupe refuses bf16 there, PyTorch would
# emulate it).
set -eu
HERE=$(dirname "$0")
LOUPE=build/loupe PY=${PYTHON:-/usr/bin/python3} T=${THREADS:-$(nproc)}
model=vgg16 top=none head=flatten,dense size=224x224 batch=16 steps=3 per_layer="" repeat=1 isa=native opt=sgd
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift ;;
    --top) top=$2; shift ;;
    --head) head=$2; shift ;;
    --size) size=$2; shift ;;
    --batch) batch=$2; shift ;;
    --steps) steps=$2; shift ;;
    --loupe) LOUPE=$2; shift ;;
    --per-layer) per_layer=--per-layer ;;
    --repeat) repeat=$2; shift ;;
    --isa) isa=$2; shift ;;
    --opt) opt=$2; shift ;;
    *) echo "bench_vs_torch.sh: unknown option $1 (see the comment at the top)"; exit 2 ;;
    esac
    shift
done
case $opt in
sgd) opt_name="SGD momentum 0.9" ;;
adam) opt_name="Adam" ;;
adamw) opt_name="AdamW weight decay 0.01" ;;
*) echo "bench_vs_torch.sh: --opt $opt: use sgd, adam or adamw"; exit 2 ;;
esac

# The CPU's own level, in oneDNN's names (what ONEDNN_MAX_CPU_ISA takes).
flags=" $(sed -n 's/^flags[^:]*://p' /proc/cpuinfo | head -1) "
has() { for f; do case $flags in *" $f "*) ;; *) return 1 ;; esac; done; }
cpu=SSE41
has avx2 fma && cpu=AVX2
has avx512f avx512cd avx512bw avx512dq avx512vl && [ $cpu = AVX2 ] && cpu=AVX512_CORE
has avx512_vnni avx512_bf16 && [ $cpu = AVX512_CORE ] && cpu=AVX512_CORE_BF16
has amx_tile amx_int8 amx_bf16 && [ $cpu = AVX512_CORE_BF16 ] && cpu=AVX512_CORE_AMX
unset DNNL_MAX_CPU_ISA # the older name of the cap: only ours counts
case $isa in
AVX2 | AVX512_CORE)
    case "$isa:$cpu" in
    AVX2:SSE41 | AVX512_CORE:SSE41 | AVX512_CORE:AVX2)
        echo "bench_vs_torch.sh: --isa $isa: this CPU only has $cpu"; exit 2 ;;
    esac
    level=$isa
    export ONEDNN_MAX_CPU_ISA="$isa"
    if [ "$isa" = AVX2 ]; then export ATEN_CPU_CAPABILITY=avx2; else export ATEN_CPU_CAPABILITY=avx512; fi ;;
native)
    level=$cpu
    unset ONEDNN_MAX_CPU_ISA ATEN_CPU_CAPABILITY ;;
*) echo "bench_vs_torch.sh: --isa $isa: use AVX2, AVX512_CORE or native"; exit 2 ;;
esac
case $level in
AVX512_CORE_AMX) bf16="AMX" ;;
AVX512_CORE_BF16) bf16="AVX512-BF16" ;;
*) bf16="" ;; # not native: the bf16 rows are skipped
esac
# --per-layer goes with loupe's bf16 run, or its fp32 run where bf16 is skipped
pl_run=loupe-fp32
[ -n "$bf16" ] && pl_run=loupe-bf16

cfg="--model $model --top $top --head $head --size $size --batch $batch --steps $steps --warmup 1 --threads $T --optimizer $opt"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
loupe_run() {
    pl=""
    [ "$r" = 1 ] && [ "loupe-$1" = "$pl_run" ] && pl=$per_layer
    "$LOUPE" bench $cfg --precision "$1" $pl >"$out/loupe-$1.$r" 2>&1 || { cat "$out/loupe-$1.$r"; exit 1; }
}
# A PyTorch mode that cannot train the model (1.13's bf16 has no hardtanh backward: MobileNetV2's
# ReLU6) is reported as such, the others still run.
torch_run() {
    "$PY" "$HERE/torch_bench.py" $cfg $2 >"$out/torch-$1.$r" 2>"$out/torch-$1.err" && return
    rm -f "$out/torch-$1.$r"
    echo "$(tail -1 "$out/torch-$1.err")" >"$out/torch-$1.failed"
}
rows="loupe-fp32 torch-fp32 torch-fp32_cl"
[ -n "$bf16" ] && rows="loupe-fp32 loupe-bf16 torch-fp32 torch-fp32_cl torch-bf16 torch-bf16_cl"
r=1
while [ "$r" -le "$repeat" ]; do
    loupe_run fp32
    torch_run fp32 ""
    [ -n "$bf16" ] && loupe_run bf16
    torch_run fp32_cl "--channels-last"
    if [ -n "$bf16" ]; then
        torch_run bf16 "--bf16"
        torch_run bf16_cl "--bf16 --channels-last"
    fi
    r=$((r + 1))
done
# best images/s of the repeats (its output kept as $out/NAME), highest peak memory
for f in $rows; do
    ls "$out/$f".[0-9]* >/dev/null 2>&1 || continue
    best=$(for g in "$out/$f".*; do printf "%s %s\n" "$(sed -n 's/^images\/s: //p' "$g")" "$g"; done | sort -g | tail -1 | cut -d' ' -f2)
    cp "$best" "$out/$f"
    peak=$(cat "$out/$f".* | sed -n 's/^peak memory (RSS): \([0-9]*\) MB/\1/p' | sort -n | tail -1)
    sed -i "s/^peak memory (RSS): .*/peak memory (RSS): $peak MB/" "$out/$f"
done
ips() { [ -f "$out/$1" ] && sed -n 's/^images\/s: //p' "$out/$1"; }
mem() { sed -n 's/^peak memory (RSS): \([0-9]*\) MB/\1/p' "$out/$1"; }
# loupe's own account of the level it ran at ("CPU: AVX2 (...), fp32"), where it prints one
seen=$(sed -n 's/^CPU: \(.*\), fp32$/\1/p' "$out/loupe-fp32")
[ "$repeat" -gt 1 ] && echo "best of $repeat runs each"
echo "$model top=$top head=$head $size batch $batch, $T threads, $steps timed steps ($opt_name), ISA $level$([ "$isa" = native ] && echo " (native)")${seen:+; loupe: $seen}"
printf "%-34s %10s %10s %10s %10s\n" "" "images/s" "peak MB" "loupe fp32" "loupe bf16"
for r in loupe-fp32 loupe-bf16 torch-fp32 torch-fp32_cl torch-bf16 torch-bf16_cl; do
    case $r in
    loupe-fp32) name="loupe fp32" ;;
    loupe-bf16) name="loupe bf16 ($bf16)" ;;
    torch-fp32) name="PyTorch fp32" ;;
    torch-fp32_cl) name="PyTorch fp32 channels_last" ;;
    torch-bf16) name="PyTorch bf16 autocast" ;;
    torch-bf16_cl) name="PyTorch bf16 autocast channels_last" ;;
    esac
    if [ -f "$out/$r.failed" ]; then
        printf "%-34s failed: %s\n" "$name" "$(cut -c1-90 "$out/$r.failed")"
        continue
    fi
    if [ ! -f "$out/$r" ]; then
        [ "$r" = loupe-bf16 ] && name="loupe bf16"
        printf "%-34s skipped: no native bf16 at %s\n" "$name" "$level"
        continue
    fi
    a=$(ips "$r")
    awk -v n="$name" -v a="$a" -v m="$(mem "$r")" -v f="$(ips loupe-fp32)" -v b="$(ips loupe-bf16 || true)" 'BEGIN {
        printf "%-34s %10.3f %10s %9.2fx ", n, a, m, (a > 0 ? f / a : 0)
        if (b == "") printf "%10s\n", "-"; else printf "%9.2fx\n", (a > 0 ? b / a : 0) }'
done
echo "(the last two columns: loupe's images/s divided by that row's)"
{ grep -h "^step:" "$out/loupe-fp32"; [ -z "$bf16" ] || grep -h "^step:" "$out/loupe-bf16"; } | sed 's/^/loupe /'
[ -n "$per_layer" ] && sed -n '/^per layer/,$p' "$out/$pl_run.1"
exit 0
