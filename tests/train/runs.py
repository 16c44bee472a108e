"""Runs `loupe train` for the end-to-end tests and reads what the run wrote."""
import csv, json, os, shutil, subprocess, sys
from types import SimpleNamespace


def workdir():
    """The test's arguments LOUPE WORKDIR, with WORKDIR emptied."""
    loupe, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return loupe, work


def train(loupe, data, run, *args, env=None):
    """`loupe train DATA --run RUN ARGS...`: returns code, out, err, and the run's
    history rows and run.json (empty when the run failed)."""
    p = subprocess.run([loupe, "train", data, "--run", run, *args], capture_output=True, text=True, env=env)
    hist, meta = [], {}
    if p.returncode == 0:
        with open(os.path.join(run, "history.csv")) as f:
            hist = list(csv.DictReader(f))
        with open(os.path.join(run, "run.json")) as f:
            meta = json.load(f)
    return SimpleNamespace(code=p.returncode, out=p.stdout, err=p.stderr, hist=hist, meta=meta)


def isa_level():
    """The instruction-set level oneDNN (and so loupe) runs at here: the CPU's, from
    /proc/cpuinfo, lowered by ONEDNN_MAX_CPU_ISA (older name DNNL_MAX_CPU_ISA); worked out
    apart from loupe. 0 below AVX2, 1 AVX2, 2 AVX-512 (avx512_core), 3 AVX512-BF16, 4 AMX."""
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    hw = 0
    for level, need in ((1, "avx2 fma"), (2, "avx512f avx512cd avx512bw avx512dq avx512vl"),
                        (3, "avx512_vnni avx512_bf16"), (4, "amx_tile amx_int8 amx_bf16")):
        if not set(need.split()) <= flags:
            break
        hw = level
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    caps = {"SSE41": 0, "AVX": 0, "AVX2": 1, "AVX2_VNNI": 1, "AVX512_CORE": 2, "AVX512_CORE_VNNI": 2,
            "AVX512_CORE_BF16": 3, "AVX512_CORE_AMX": 4}
    return min(hw, caps.get(cap.upper(), 4))
