"""reliability_fuzz_regressions: runs each fuzz target's entry point over its
generated seed corpus (make_seeds.py) and over every minimized crash kept in
tests/fuzz/regressions/<target>/. Fails when any input crashes, hangs or (in
sanitizer builds) trips ASan/UBSan.

usage: replay.py WORKDIR LOUPE TARGET=EXE...   (EXE: replay_<t> or fuzz_<t>)"""
import os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_seeds  # noqa: E402

work, loupe, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
seeds = os.path.join(work, "seeds")
make_seeds.make_all(seeds, loupe if os.path.exists(loupe) else None)
failures = 0
env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=1:abort_on_error=0")


def replay(exe, files):
    try:
        r = subprocess.run([exe, *files], capture_output=True, text=True, timeout=240, env=env)
        return r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        return False, "timed out (a hang?)"


for pair in pairs:
    target, exe = pair.split("=", 1)
    sd, rd = os.path.join(seeds, target), os.path.join(HERE, "regressions", target)
    seed_files = [os.path.join(sd, f) for f in sorted(os.listdir(sd))] if os.path.isdir(sd) else []
    reg_files = [os.path.join(rd, f) for f in sorted(os.listdir(rd)) if not f.startswith(".")] if os.path.isdir(rd) else []
    ok, tail = replay(exe, seed_files)  # the seeds in one process
    print("%s: %d seeds: %s" % (target, len(seed_files), "ok" if ok else "FAILED"), flush=True)
    if not ok:
        failures += 1
        print(tail)
    for f in reg_files:  # each kept crash on its own, so that every one is reported
        ok, tail = replay(exe, [f])
        print("%s: regression %s: %s" % (target, os.path.basename(f), "ok" if ok else "FAILED"), flush=True)
        if not ok:
            failures += 1
            print(tail)
print("fuzz regressions: %d failures" % failures)
sys.exit(1 if failures else 0)
