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
