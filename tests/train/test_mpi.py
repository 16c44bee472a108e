"""Data-parallel training under mpirun (Open MPI, shared memory and TCP on the loopback).

1. The collectives alone (dist_driver): integer-valued gradients summed exactly, a broadcast.
2. np=2 against np=1 at the same global batch (5: slices of 2 and 3, and a last batch of 1,
   so one rank has an empty slice; tiny top=keep, whose dropout masks must be the whole
   batch's on each rank's slice; Adam), both resuming epoch 1 of an np=1 run. Metric: per tensor max|w2 - w1| / max|w1|. The two
   runs differ only in the order of fp32 additions (each rank sums its samples' gradients,
   then the ranks' sums are added), so the tolerance is the sensitivity of that same run to
   rounding: np=1 again from weights perturbed by 1e-7 (one or two ulps), two sign patterns,
   as the engine's parity tests do; np=2 must be within 10x that + 1e-6.
3. Two np=2 runs give bit-identical weights; the TCP transport gives the same bits.
   2 and 3 again with a frozen base (the feature cache on each rank; dropout in the head).
4. One run directory: the np=2 run writes the files the np=1 run writes, no more, and
   history.csv has one row per epoch; the checkpoint records the batch and the processes.
5. kill -9 of one rank mid-run: mpirun ends the job within 60 s, the last checkpoint loads,
   and --resume under mpirun finishes the run.
6. A process at another instruction-set level than process 0's is refused with a message.
usage: test_mpi.py LOUPE WORKDIR DIST_DRIVER"""
import csv, os, shutil, signal, subprocess, sys, time
import numpy as np

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import make_data
import safetensors_io as st

LOUPE, WORK, DRIVER = sys.argv[1], sys.argv[2], sys.argv[3]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(8, 4, 0))
MPI = ["mpirun", "-np", "2", "--oversubscribe", "--allow-run-as-root"]
SHM = ["--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none"]
TCP = ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo"]
failures = []
LOGS = {}


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg)
    if not cond:
        failures.append(msg)


def run(cmd, timeout=300):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        print(r.stdout[-3000:], r.stderr[-3000:])
        sys.exit("FAIL: %s exited %d" % (" ".join(cmd), r.returncode))
    return r


def train(name, mpi=None, *extra):
    path = os.path.join(WORK, name)
    cmd = (mpi or []) + [LOUPE, "train", DATA, "--run", path, "--model", "tiny", "--top", "keep", "--size", "32x32",
                         "--batch", "5", "--epochs", "2", "--optimizer", "adam", "--lr", "0.003", "--seed", "5",
                         "--threads", "1", *extra]
    LOGS[name] = run(cmd).stdout
    w, meta = st.read(os.path.join(path, "checkpoints", "last.safetensors"))
    return path, {k: v for k, v in w.items() if not k.startswith("optim.")}, meta


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# 1. collectives
r = run(MPI + SHM + [DRIVER])
check("ok:" in r.stdout, "integer-valued allreduce exact and broadcast: " + r.stdout.strip())

# the start every run below resumes from (--resume; a run of np=1 resumed by np=2 too): epoch 1 of
# one np=1 run, copied, its weights perturbed in two copies
rng = np.random.RandomState(1)


def make_base(name, *extra):
    path, _, _ = train(name, None, "--epochs", "1", *extra)
    w, meta = st.read(os.path.join(path, "checkpoints", "last.safetensors"))
    return path, w, {k: v for k, v in meta.items() if k != "checksum"}  # rewritten below


def resume(base, name, mpi=None, perturb=False, *extra):
    path = os.path.join(WORK, name)
    shutil.copytree(base[0], path)
    w = {}
    for k, v in base[1].items():
        if perturb and v.dtype == np.float32 and not k.startswith("optim."):
            s = np.where(rng.rand(*v.shape) < 0.5, np.float32(1e-7), np.float32(-1e-7))
            w[k] = (v + v * s).astype(np.float32)
        else:
            w[k] = v
    st.write(os.path.join(path, "checkpoints", "last.safetensors"), w, base[2])
    return train(name, mpi, "--resume", "--epochs", "3", *extra)


def compare(tag, base, *extra):
    """np=1, np=2 (twice and over TCP), np=1 from perturbed weights twice; returns the runs"""
    what = tag.strip("_").replace("_", " ") + ": " if tag else ""
    r1, w1, _ = resume(base, tag + "np1", None, False, *extra)
    r2, w2, meta2 = resume(base, tag + "np2", MPI + SHM, False, *extra)
    _, w2b, _ = resume(base, tag + "np2_again", MPI + SHM, False, *extra)
    _, w2t, _ = resume(base, tag + "np2_tcp", MPI + TCP, False, *extra)
    sens = {k: 0.0 for k in w1}
    for i in range(2):
        _, wp, _ = resume(base, tag + "np1_perturbed%d" % i, None, True, *extra)
        for k in w1:
            if w1[k].dtype == np.float32:
                sens[k] = max(sens[k], rel(wp[k], w1[k]))
    bw = {k: v for k, v in base[1].items() if not k.startswith("optim.")}
    check(sorted(w1) == sorted(w2), what + "np=2 writes the tensors np=1 writes")
    moved = max(rel(w1[k], bw[k]) for k in bw if k in w1 and w1[k].dtype == np.float32)
    check(moved > 1e-3, what + "training moved the weights (by %.2e of the largest)" % moved)
    worst, bad = 0.0, []
    for k in w1:
        if w1[k].dtype != np.float32:
            continue
        e, tol = rel(w2[k], w1[k]), 10 * sens[k] + 1e-6
        worst = max(worst, e)
        if e > tol:
            bad.append("%s %.2e > %.2e" % (k, e, tol))
    check(not bad, what + "np=2 vs np=1 weights within 10 x sensitivity + 1e-6 (worst %.2e, worst sensitivity %.2e)%s"
          % (worst, max(sens.values()), ": " + "; ".join(bad) if bad else ""))
    check(all(np.array_equal(w2[k], w2b[k]) for k in w2), what + "two np=2 runs: bit-identical weights")
    check(all(np.array_equal(w2[k], w2t[k]) for k in w2), what + "np=2 over TCP (loopback): the same bits as over shared memory")
    return r1, r2, meta2


r1, r2, meta2 = compare("", make_base("base"))
# a frozen base: each rank caches its own slices' features; dropout in the head
FROZEN = ("--top", "none", "--head", "flatten,dense:16:relu,dropout:0.5,dense", "--freeze", "base", "--optimizer", "sgd",
          "--lr", "0.05", "--momentum", "0.9")
compare("frozen_base_", make_base("frozen_base", *FROZEN), *FROZEN)
check("Feature cache: frozen layers" in LOGS["frozen_base_np2"], "frozen base under mpirun: the feature cache is on")

# 4. one run directory
def files(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            rp = os.path.relpath(os.path.join(d, f), root)
            out.add(os.path.dirname(rp) + "/*" if rp.startswith("logs") else rp)  # event files carry host and time
    return out
check(files(r1) == files(r2), "np=2 writes the run files np=1 writes: %s vs %s" % (sorted(files(r2)), sorted(files(r1))))
h1 = list(csv.DictReader(open(os.path.join(r1, "history.csv"))))
h2 = list(csv.DictReader(open(os.path.join(r2, "history.csv"))))
check(len(h2) == 3 and all(abs(float(a[c]) - float(b[c])) <= 1e-4 * max(1.0, abs(float(a[c])))
                          for a, b in zip(h1, h2) for c in ("loss", "accuracy", "val_loss", "val_accuracy")),
      "history.csv: one row per epoch, the np=1 run's figures (%s vs %s)" % ([dict(r) for r in h2], [dict(r) for r in h1]))
check(meta2.get("batch") == "5" and meta2.get("processes") == "2", "checkpoint records batch 5, 2 processes (%s)"
      % {k: meta2.get(k) for k in ("batch", "processes")})


# 5. kill -9 of one rank, then --resume
def rank_pids(run_dir):
    pids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % p, "rb").read().split(b"\0")
            env = open("/proc/%s/environ" % p, "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and os.path.basename(cmd[0]) == os.path.basename(LOUPE).encode() and run_dir.encode() in cmd:
            for e in env:
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    pids[int(e.split(b"=")[1])] = int(p)
    return pids


kr = os.path.join(WORK, "killed")
cmd = MPI + SHM + [LOUPE, "train", DATA, "--run", kr, "--model", "tiny", "--top", "keep", "--size", "32x32", "--batch",
                   "5", "--epochs", "100000", "--seed", "5", "--threads", "1"]
job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
last = os.path.join(kr, "checkpoints", "last.safetensors")
t0 = time.time()
while not os.path.exists(last) and time.time() - t0 < 120 and job.poll() is None:
    time.sleep(0.2)
time.sleep(0.5)  # into a later epoch
pids = rank_pids(kr)
check(1 in pids and job.poll() is None, "the job runs with rank 1 (pids %s)" % pids)
if 1 in pids:
    os.kill(pids[1], signal.SIGKILL)
    t1 = time.time()
    try:
        out, err = job.communicate(timeout=60)
        check(job.returncode != 0, "mpirun ends the job %.1f s after rank 1's kill -9, exit %d" % (time.time() - t1, job.returncode))
    except subprocess.TimeoutExpired:
        job.kill()
        job.communicate()
        check(False, "mpirun did not end the job within 60 s of rank 1's kill -9")
    left = [p for p in rank_pids(kr).values()]
    check(not left, "no rank left running (%s)" % left)
    w, m = st.read(last)
    done = int(m.get("epoch", "0"))
    check(done >= 1 and len(w) > 0, "the last checkpoint loads (%d tensors, epoch %d)" % (len(w), done))
    cmd2 = [c if c != "100000" else str(done + 1) for c in cmd] + ["--resume"]
    r = subprocess.run(cmd2, capture_output=True, text=True, timeout=300)
    hist = list(csv.DictReader(open(os.path.join(kr, "history.csv")))) if r.returncode == 0 else []
    check(r.returncode == 0 and len(hist) == done + 1 and hist[-1]["epoch"] == str(done + 1),
          "--resume under mpirun finishes epoch %d (exit %d, %d history rows) %s" % (done + 1, r.returncode, len(hist),
                                                                                  r.stderr[-500:]))
else:
    job.kill()
    job.communicate()

# 6. processes at different instruction-set levels are refused (the gradients' layouts differ)
import runs  # noqa: E402
if runs.isa_level() > 1:
    mixed = MPI + SHM + ["sh", "-c", 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then export ONEDNN_MAX_CPU_ISA=AVX2; fi; exec "$0" "$@"',
                         LOUPE, "train", DATA, "--run", os.path.join(WORK, "mixed"), "--model", "tiny", "--size", "32x32",
                         "--epochs", "1", "--threads", "1"]
    r = subprocess.run(mixed, capture_output=True, text=True, timeout=120)
    check(r.returncode != 0 and "all processes must run at one level" in r.stderr,
          "a process capped to AVX2 beside one at the CPU's level: refused, saying so (exit %d: %s)" % (
              r.returncode, r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""))
else:
    print("skipped: the mixed-level check needs a CPU above AVX2")

print("%d failure(s)" % len(failures) if failures else "all checks passed")
sys.exit(1 if failures else 0)
