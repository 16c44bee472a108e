"""Shared helpers of the reliability tests: a small generated dataset, the train
command line they all use, and the checks of a run directory after a crash."""
import atexit, csv, fcntl, glob, io, json, os, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
sys.path.insert(0, os.path.join(HERE, ".."))
import make_data  # noqa: E402
import safetensors_io as st  # noqa: E402

HEADER = "epoch,loss,accuracy,val_loss,val_accuracy,lr"


class Checks:
    def __init__(self, name):
        self.name, self.failures = name, []

    def check(self, cond, msg):
        if not cond:
            self.failures.append(msg)
            print("FAIL:", msg, flush=True)
        return cond

    def done(self):
        print("%s: %d failures" % (self.name, len(self.failures)), flush=True)
        sys.exit(1 if self.failures else 0)


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def make_dataset(work, per_class=(4, 2, 2)):
    """8 train, 4 valid, 4 test images of 32x32: 2 steps of batch 4 per epoch."""
    return make_data.make(os.path.join(work, "data"), per_class=per_class)


def train_args(data, run, epochs, *extra):
    # One thread everywhere: resume is bit-identical only at the same thread count.
    return ["train", data, "--run", run, "--model", "tiny", "--top", "none", "--head", "flatten,dense",
            "--size", "32x32", "--batch", "4", "--epochs", str(epochs), "--lr", "0.05", "--momentum", "0.9",
            "--seed", "7", "--threads", "1", *extra]


def env_with(**kv):
    e = dict(os.environ)
    e.update({k: str(v) for k, v in kv.items()})
    return e


def run(loupe, args, env=None, timeout=120):
    return subprocess.run([loupe, *args], capture_output=True, text=True, env=env, timeout=timeout)


def read_tensors(path):
    tensors, meta = st.read(path)
    return tensors, meta


def same_tensors(a, b):
    """Names equal and every tensor bit-identical (compares raw bytes)."""
    if sorted(a) != sorted(b):
        return False
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def history_problems(path):
    """What is wrong with a history.csv that a crash may have cut short: only
    complete rows (newline-terminated, 6 numeric fields), epochs 1..n in order."""
    if not os.path.exists(path):
        return [], []
    text = open(path, "rb").read().decode()
    probs = []
    if not text.endswith("\n"):
        probs.append("last line is not complete: %r" % text[-60:])
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    if not lines or lines[0] != HEADER:
        probs.append("header is %r" % (lines[0] if lines else ""))
        return probs, []
    rows = []
    for i, line in enumerate(lines[1:]):
        f = line.split(",")
        if len(f) != 6:
            probs.append("row %d has %d fields: %r" % (i + 1, len(f), line))
            continue
        try:
            [float(x) for x in f]
        except ValueError:
            probs.append("row %d is not numeric: %r" % (i + 1, line))
        rows.append(line)
    epochs = [int(r.split(",")[0]) for r in rows if r.split(",")[0].isdigit()]
    if epochs != list(range(1, len(epochs) + 1)):
        probs.append("epochs are %s, not 1..n" % epochs)
    return probs, rows


def leftover_temps(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "*.tmp.*")) + glob.glob(os.path.join(run_dir, "checkpoints", "*.tmp.*")))


def checkpoint_problems(loupe, path, test_dir):
    """A checkpoint must parse (our own reader, written from the format spec)
    and `loupe evaluate` must run on it."""
    try:
        tensors, meta = read_tensors(path)
    except Exception as e:  # noqa: BLE001 - any parse error is the finding
        return ["%s does not parse: %s" % (path, e)]
    probs = []
    if meta.get("format") != "loupe-checkpoint-1":
        probs.append("%s: metadata format %r" % (path, meta.get("format")))
    if not any(k.startswith("head.") or k.startswith("features.") for k in tensors):
        probs.append("%s: no network tensors" % path)
    r = run(loupe, ["evaluate", path, test_dir, "--json"])
    if r.returncode != 0:
        probs.append("loupe evaluate %s exited %d: %s" % (path, r.returncode, r.stderr.strip()[-300:]))
    else:
        try:
            ev = json.loads(r.stdout)
            if ev.get("n", 0) < 1:
                probs.append("evaluate saw no images")
        except ValueError:
            probs.append("evaluate --json output is not JSON: %r" % r.stdout[:200])
    return probs


# File leases: a test holds one on an image so that loupe's open() of it waits until the
# test lets go, which stops loupe at a known point whatever the machine's speed.
F_SETLEASE, F_GETLEASE = getattr(fcntl, "F_SETLEASE", 1024), getattr(fcntl, "F_GETLEASE", 1025)


def lease(path):
    """A write lease on path: any other process's open() of it waits for release()."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
    except OSError:
        os.close(fd)
        raise
    return fd


def breaking(fd):
    """Someone is opening the file: the lease shows the type it must be lowered to."""
    return fcntl.fcntl(fd, F_GETLEASE) != fcntl.F_WRLCK


def release(fd):
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    except OSError:
        pass  # no lease left: the kernel breaks one itself after /proc/sys/fs/lease-break-time
    os.close(fd)


def lease_capable(work, prefix):
    """work, or else a temporary folder (named prefix...), on a file system that grants leases.
    A holder of leases must catch SIGIO (the kernel tells it a lease breaks that way; the
    default action ends the process)."""
    err = None
    for d in (work, None):
        if d is None:
            d = tempfile.mkdtemp(prefix=prefix)
            atexit.register(shutil.rmtree, d, True)
        probe = os.path.join(d, "lease-probe")
        open(probe, "wb").close()
        try:
            release(lease(probe))
            return d
        except OSError as e:
            err = e
        finally:
            os.unlink(probe)
    sys.exit("FAIL: no file leases (fcntl F_SETLEASE) here, the test cannot hold loupe at a given point: %s" % err)
