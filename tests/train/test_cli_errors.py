"""Every bad command line gives one clear line on stderr and a non-zero exit; a bad option
value exits 2 with a line naming the option and the value; predict gives back what it
gathered when a file is missing (checked under valgrind where it is installed)."""
import os, shutil, subprocess, sys
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import make_data
import safetensors_io as st
import numpy as np

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(3, 2, 2))
R = os.path.join(WORK, "run")
import h5py  # an HDF5 file with a Keras ResNet50 weight but no Keras layer list
with h5py.File(os.path.join(WORK, "resnet.h5"), "w") as f:
    f["conv1_conv/kernel:0"] = np.zeros((7, 7, 3, 64), np.float32)
failures = 0
cases = [
    (["train", DATA, "--run", R, "--model", "resnet18", "--size", "32x32", "--weights", os.path.join(WORK, "resnet.h5")],
     "not a Keras weights file"),
    (["train", DATA, "--run", R, "--bogus"], "unknown option"),
    (["train", DATA, "--run", R, "--epochs", "x"], "--epochs"),
    (["train", DATA, "--run", R, "--epochs", "-3"], "--epochs"),
    (["train", DATA, "--run", R, "--lr", "fast"], "--lr"),
    (["train", DATA, "--run", R, "--size", "32"], "--size"),
    (["train", DATA, "--run", R, "--size", "16x16", "--model", "tiny"], "too small"),
    (["train", os.path.join(WORK, "nope"), "--run", R], "nope"),
    (["train", DATA], "--run"),
    (["train", DATA, "--run", R, "--model", "resnet101"], "unknown model"),
    (["train", DATA, "--run", R, "--model", "resnet18", "--bn", "sometimes"], "batch norm mode"),
    (["train", DATA, "--run", R, "--optimizer", "rmsprop"], "unknown optimizer"),
    (["train", DATA, "--run", R, "--schedule", "step:x"], "schedule"),
    (["train", DATA, "--run", R, "--reduce-lr", "2:1"], "--reduce-lr"),
    (["train", DATA, "--run", R, "--model", "tiny", "--size", "32x32", "--top", "none", "--weights", os.path.join(WORK, "w.safetensors")], "w.safetensors"),
    (["evaluate", os.path.join(WORK, "missing.safetensors"), DATA], "missing.safetensors"),
    (["evaluate"], "needs"),
    (["predict", os.path.join(WORK, "missing.safetensors"), os.path.join(WORK, "nothere.png")], "nothere.png"),
    (["frobnicate"], "unknown command"),
    # a head replaces the top: --head with --top keep contradicts itself
    (["train", DATA, "--run", R, "--model", "tiny", "--top", "keep", "--head", "gap,dense"], "needs --top none"),
    (["summary", "--model", "tiny", "--top", "keep", "--head", "gap,dense"], "needs --top none"),
    # a folder where a checkpoint goes
    (["evaluate", DATA, DATA], "a folder, not a checkpoint file"),
    # a validation split that would be left unused, the valid/ folder being the validation set
    (["train", DATA, "--run", R, "--model", "tiny", "--size", "32x32", "--validation-split", "0.2"], "valid/ exists"),
    # options another one would silently override: a schedule under --reduce-lr, SGD's momentum under Adam
    (["train", DATA, "--run", R, "--model", "tiny", "--size", "32x32", "--schedule", "cosine", "--reduce-lr", "0.5:1"],
     "--reduce-lr's would win"),
    (["train", DATA, "--run", R, "--model", "tiny", "--size", "32x32", "--optimizer", "adam", "--momentum", "0.9"],
     "--momentum is SGD's"),
]
# weights for another model: a VGG16-shaped conv file given to the tiny model
st.write(os.path.join(WORK, "w.safetensors"), {"features.0.weight": np.zeros((64, 3, 3, 3), np.float32), "features.0.bias": np.zeros(64, np.float32)})
r = subprocess.run([LOUPE, "frobnicate"], capture_output=True, text=True)
if not r.stderr.startswith("loupe: unknown command"):
    failures += 1
    print(f"FAIL loupe frobnicate: the message should start 'loupe: unknown command': {r.stderr!r}")
for args, needle in cases:
    r = subprocess.run([LOUPE, *args], capture_output=True, text=True)
    lines = [l for l in r.stderr.strip().split("\n") if l and not l.startswith("hint:")]
    ok = r.returncode != 0 and needle in r.stderr and len(lines) >= 1 and "Segmentation" not in r.stderr and r.returncode < 128
    if not ok:
        failures += 1
        print(f"FAIL loupe {' '.join(args)}: exit {r.returncode}, stderr {r.stderr!r}")
# every case above was refused before training began: no run folder is left behind
if os.path.exists(R):
    failures += 1
    print(f"FAIL refused trainings left {R} behind: {os.listdir(R)}")

# Bad values of numeric options: exit 2 (bad usage) and one line that names the option and
# quotes the value as given. Numbers are parsed strictly: the whole argument is the number,
# in range (no spaces, signs where none belong, hex, inf/nan, overflow, trailing text).
M = os.path.join(WORK, "missing.safetensors")
PNG = os.path.join(DATA, "test", "negative", "negative_000.png")
TEST = os.path.join(DATA, "test")
T = ["train", DATA, "--run", os.path.join(WORK, "run_usage"), "--model", "tiny"]  # tiny: quick should one be accepted
usage_cases = [
    # 1. strict numbers
    (["data", DATA, "--seed", " -5"], "--seed", " -5"),
    (["data", DATA, "--seed", "-5"], "--seed", "-5"),
    (["data", DATA, "--seed", "5x"], "--seed", "5x"),
    (["data", DATA, "--seed", "18446744073709551616"], "--seed", "18446744073709551616"),  # 2^64
    (["data", DATA, "--validation-split", " 0.2"], "--validation-split", " 0.2"),
    (["data", DATA, "--max-pixels", "9223372036854775808"], "--max-pixels", "9223372036854775808"),  # 2^63
    ([*T, "--epochs", " 3"], "--epochs", " 3"),
    ([*T, "--epochs", "3 "], "--epochs", "3 "),
    ([*T, "--batch", "+4"], "--batch", "+4"),
    ([*T, "--seed", "0x10"], "--seed", "0x10"),
    ([*T, "--seed", "-1"], "--seed", "-1"),
    ([*T, "--lr", " 0.1"], "--lr", " 0.1"),
    ([*T, "--lr", "inf"], "--lr", "inf"),
    ([*T, "--lr", "nan"], "--lr", "nan"),
    ([*T, "--lr", "1e999"], "--lr", "1e999"),
    ([*T, "--lr", "0x1p-3"], "--lr", "0x1p-3"),
    ([*T, "--lr", "0"], "--lr", "0"),  # the library would read 0 as its default
    ([*T, "--momentum", "1"], "--momentum", "1"),
    ([*T, "--zoom-range", "-0.1"], "--zoom-range", "-0.1"),
    ([*T, "--reduce-lr", "0.5: 3"], "--reduce-lr", "0.5: 3"),
    ([*T, "--reduce-lr", "0.5:99999999999"], "--reduce-lr", "0.5:99999999999"),
    ([*T, "--brightness-range", "0.8:inf"], "--brightness-range", "0.8:inf"),
    (["evaluate", M, TEST, "--batch", "32abc"], "--batch", "32abc"),
    (["predict", M, PNG, "--top", " 1"], "--top", " 1"),
    (["diagnose", R, "--epoch", "1.5"], "--epoch", "1.5"),
    (["fashion", "--out", os.path.join(WORK, "f"), "--seed", "-1"], "--seed", "-1"),
    (["fashion", "--out", os.path.join(WORK, "f"), "--negative", " 1"], "--negative", " 1"),
    (["summary", "--model", "tiny", "--classes", "2 "], "--classes", "2 "),
    # 2. --threads: 0 (one per CPU) to 1024, the same for every subcommand that takes it
    (["data", DATA, "--threads", "65536"], "--threads", "65536"),
    ([*T, "--threads", "65536"], "--threads", "65536"),
    (["evaluate", M, TEST, "--threads", "65536"], "--threads", "65536"),
    (["evaluate", M, TEST, "--threads", "1025"], "--threads", "1025"),
    (["predict", M, PNG, "--threads", "65536"], "--threads", "65536"),
    (["bench", "--threads", "65536"], "--threads", "65536"),
    (["bench", "--threads", "-1"], "--threads", "-1"),
    ([*T, "--threads", "99999999999999999999"], "--threads", "99999999999999999999"),
    # 3. --size: each side 1 (convert: 32) to 65536, at most 2^26 pixels, strict digits
    (["summary", "--model", "vgg16", "--size", "99999999999x32"], "--size", "99999999999x32"),
    (["bench", "--size", "99999999999x32"], "--size", "99999999999x32"),
    ([*T, "--size", "99999999999x32"], "--size", "99999999999x32"),
    (["convert", M, os.path.join(WORK, "o.safetensors"), "--size", "99999999999x32"], "--size", "99999999999x32"),
    (["convert", M, os.path.join(WORK, "o.safetensors"), "--size=99999999999"], "--size", "99999999999"),
    (["summary", "--model", "vgg16", "--size", "65537x32"], "--size", "65537x32"),
    (["bench", "--size", "8193x8192"], "--size", "8193x8192"),  # 2^26 + 8192 pixels
    (["summary", "--model", "vgg16", "--size", "4294967328x32"], "--size", "4294967328x32"),  # 2^32 + 32
    ([*T, "--size", " 64x64"], "--size", " 64x64"),
    ([*T, "--size", "64x 64"], "--size", "64x 64"),
    ([*T, "--size", "64x64x"], "--size", "64x64x"),
    (["summary", "--model", "vgg16", "--size", "-32x32"], "--size", "-32x32"),
]
for args, option, value in usage_cases:
    r = subprocess.run([LOUPE, *args], capture_output=True, text=True)
    first = r.stderr.split("\n")[0]
    if r.returncode != 2 or option not in first or "'%s'" % value not in first:
        failures += 1
        print(f"FAIL loupe {args}: exit {r.returncode} (want 2), want a line naming {option} and '{value}': {r.stderr!r}")

# The limits themselves are accepted: the largest thread count (the missing checkpoint is
# the error, exit 1) and the largest image (8192x8192; a gap head keeps the model small).
for args in (["evaluate", M, TEST, "--threads", "1024"], ["evaluate", M, TEST, "--threads", "0"],
             ["summary", "--model", "vgg16", "--top", "none", "--head", "gap,dense", "--size", "8192x8192"],
             ["convert", M, os.path.join(WORK, "o.safetensors"), "--size", "32"]):
    r = subprocess.run([LOUPE, *args], capture_output=True, text=True)
    want = 0 if args[0] == "summary" else 1
    if r.returncode != want or "expects" in r.stderr:
        failures += 1
        print(f"FAIL loupe {args}: exit {r.returncode} (want {want}, the value accepted): {r.stderr!r}")

# 4. predict stops at a missing file or checkpoint without leaking what it had gathered
# (the paths of the files and folders before it).
# valgrind cannot run an AddressSanitizer build; there LeakSanitizer checks every run above
# instead (CMake sets LOUPE_TEST_SANITIZED for such builds)
VG = None if os.environ.get("LOUPE_TEST_SANITIZED") else shutil.which("valgrind")
if os.environ.get("LOUPE_TEST_SANITIZED"):
    print("sanitized build: predict leak check left to LeakSanitizer")
elif not VG:
    print("valgrind is not installed: predict leak check skipped")
else:
    for args, want in ((["predict", M, PNG, TEST, os.path.join(WORK, "nothere.png")], 2),
                       (["predict", M, PNG, TEST], 1)):
        r = subprocess.run([VG, "-q", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
                            "--show-leak-kinds=definite", LOUPE, *args], capture_output=True, text=True, timeout=300)
        if r.returncode != want:
            failures += 1
            print(f"FAIL valgrind loupe {args}: exit {r.returncode} (want {want}; 99 = memcheck errors or leaks): {r.stderr!r}")

print("cli errors: %d failures" % failures)
sys.exit(1 if failures else 0)
