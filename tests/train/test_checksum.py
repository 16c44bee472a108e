"""Checkpoints carry a CRC32 of their payload; a flipped byte in a tensor is refused
with "corrupt checkpoint" by every reader (evaluate, predict, --resume, --weights).
A checkpoint whose weights hold a NaN (written without a checksum, as another tool
might) is refused by evaluate and predict, naming an image, instead of figures made
from NaN outputs (evaluate once hung on them in its ROC-AUC)."""
import os, shutil, subprocess, sys, zlib
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import make_data
import safetensors_io as st

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(4, 2, 0), jpeg=False)
run = os.path.join(WORK, "run")
args = ["--model", "tiny", "--top", "none", "--size", "32x32", "--batch", "4", "--epochs", "1", "--quiet", "--tensorboard", "off"]
subprocess.run([LOUPE, "train", DATA, "--run", run, *args], check=True, capture_output=True)
ck = os.path.join(run, "checkpoints", "last.safetensors")
header, data, base = st.read_header(ck)
meta, data = header["__metadata__"], bytearray(data)
failures = 0
# independent check of the stored value: zlib's CRC-32 of the whole data section
if meta.get("checksum") != "crc32:%08x" % zlib.crc32(bytes(data[base:])):
    failures += 1
    print("FAIL: stored checksum", meta.get("checksum"), "is not the CRC-32 of the payload")
# NaN weights in the output layer: every output NaN
tensors, tmeta = st.read(ck)
name = sorted(n for n in tensors if n.endswith("weight"))[-1]
tensors[name] = tensors[name].copy()
tensors[name].flat[0] = float("nan")
st.write(os.path.join(WORK, "nan.safetensors"), tensors, {k: v for k, v in tmeta.items() if k != "checksum"})
for cmd in (["evaluate", os.path.join(WORK, "nan.safetensors"), os.path.join(DATA, "valid"), "--json"],
            ["predict", os.path.join(WORK, "nan.safetensors"), os.path.join(DATA, "valid"), "--json"]):
    try:
        r = subprocess.run([LOUPE, *cmd], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        failures += 1
        print(f"FAIL loupe {cmd[0]} on NaN weights: still running after 120 s")
        continue
    if r.returncode not in (1, 2) or "NaN or Inf" not in r.stderr or "valid" not in r.stderr:
        failures += 1
        print(f"FAIL loupe {cmd[0]} on NaN weights: exit {r.returncode}, stdout {r.stdout[-200:]!r}, stderr {r.stderr[-300:]!r}")
data[base + 5] ^= 0x10  # flip one bit inside the first tensor
open(ck, "wb").write(data)
for cmd in (["evaluate", ck, os.path.join(DATA, "valid")],
            ["predict", ck, os.path.join(DATA, "valid")],
            ["train", DATA, "--run", run, "--resume", *args[:-5], "--epochs", "2", "--tensorboard", "off"]):
    r = subprocess.run([LOUPE, *cmd], capture_output=True, text=True)
    if r.returncode == 0 or "corrupt checkpoint" not in r.stderr:
        failures += 1
        print(f"FAIL loupe {cmd[0]} on a damaged checkpoint: exit {r.returncode}, {r.stderr!r}")
print("checksum: %d failures" % failures)
sys.exit(1 if failures else 0)
