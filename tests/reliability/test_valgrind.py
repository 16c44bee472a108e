"""reliability_valgrind: a short training run under valgrind memcheck: no
invalid reads/writes, no use of uninitialised values, no definite leaks.
Train 1 epoch (tiny model, 2 OpenMP threads), --resume for a 2nd epoch, then
evaluate the checkpoint. No suppressions are needed today (OpenMP's thread
stacks show as "possibly lost", which is not an error); any new one goes in
tests/reliability/valgrind.supp with its reason.

usage: test_valgrind.py LOUPE WORKDIR   (exit 77 = skipped: no valgrind)"""
import os, shutil, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checks, fresh, make_dataset, train_args

LOUPE, WORK = sys.argv[1], fresh(sys.argv[2])
VG = shutil.which("valgrind")
if not VG:
    print("SKIPPED: valgrind is not installed (apt-get install valgrind)")
    sys.exit(77)
c = Checks("reliability_valgrind")
DATA = make_dataset(WORK)
RUN = os.path.join(WORK, "run")
supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "valgrind.supp")
VGARGS = [VG, "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
          "--show-leak-kinds=definite", "--num-callers=30", "--suppressions=" + supp]


def two_threads(args):
    """train_args uses --threads 1; here 2, so that OpenMP runs threads."""
    i = args.index("--threads")
    return args[:i + 1] + ["2"] + args[i + 2:]


for what, args in (("train 1 epoch", two_threads(train_args(DATA, RUN, 1))),
                   ("train --resume to 2 epochs", two_threads(train_args(DATA, RUN, 2, "--resume"))),
                   ("evaluate", ["evaluate", os.path.join(RUN, "checkpoints", "last.safetensors"), os.path.join(DATA, "test")])):
    log = os.path.join(WORK, what.split()[0] + ("_resume" if "resume" in what else "") + ".valgrind.txt")
    r = subprocess.run(VGARGS + ["--log-file=" + log, LOUPE, *args], capture_output=True, text=True, timeout=600)
    text = open(log).read()
    summary = [l.split("== ", 1)[-1] for l in text.splitlines() if "ERROR SUMMARY" in l or "definitely lost" in l]
    print("%s: exit %d; %s" % (what, r.returncode, "; ".join(summary)), flush=True)
    if not c.check(r.returncode == 0, "%s under valgrind: exit %d (99 = memcheck errors or definite leaks)" % (what, r.returncode)):
        print(text[-6000:])
        print(r.stderr[-1000:])
c.done()
