"""What the op tests (test_batchnorm.py, test_graph_ops.py) share: the CPU levels they run
their harness under, the harness's float32 output files, and the element-wise comparison
against a bound."""
import os

import numpy as np


def cpu_flags():
    """The CPU's flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_levels():
    """ONEDNN_MAX_CPU_ISA values for each level this CPU has, then "" (uncapped)."""
    flags = cpu_flags()
    out = []
    if {"avx2", "fma"} <= flags:
        out.append("AVX2")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        out.append("AVX512_CORE")
    out.append("")
    return out


def read(outdir, name, shape):
    """The harness's output `name` (float32 file), as float64 of the given shape."""
    a = np.fromfile(os.path.join(outdir, name + ".f32"), dtype=np.float32)
    if a.size != int(np.prod(shape)):
        raise RuntimeError(f"{name}: {a.size} values, expected {int(np.prod(shape))}")
    return a.reshape(shape).astype(np.float64)


def compare(label, got, want, bound, failures):
    """Every |got - want| within bound (NaN fails); else a line in failures naming the worst."""
    got, want, bound = (np.asarray(v, dtype=np.float64) for v in (got, want, bound))
    err = np.abs(got - want)
    bad = ~(err <= bound)  # NaN fails too
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, (err + 1e-300) / np.maximum(bound, 1e-300), 0)), err.shape)
        failures.append(f"{label}: {int(bad.sum())} of {err.size} beyond the bound; worst at {tuple(map(int, i))}: "
                        f"got {got[i]:.9g}, want {want[i]:.9g}, bound {bound[i]:.3g}")
        return False
    return True
