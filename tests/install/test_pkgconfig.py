"""install_pkgconfig: the C API as a user meets it after an install.

usage: test_pkgconfig.py CMAKE BUILD_DIR LIBDIR README CC WORKDIR [CFLAG...]

Installs BUILD_DIR into WORKDIR/prefix (`cmake --install --prefix`), takes the
C program from README.md's "The C API in ten lines" at test time (so the README
cannot drift from what builds), compiles it with `pkg-config --cflags --libs loupe`
only, runs it against the installed shared library: first where it has no data
(it must fail with exit 1 and lp_errmsg()'s line), then on a small Fashion-MNIST
folder made by the installed `loupe fashion`, and checks the probabilities it
predicts. Also links it statically (libloupe.a in place of -lloupe, with
`pkg-config --static`), which fails when loupe.pc misses a library. CFLAGs go
into each compile: a sanitized libloupe needs the sanitizer in the program too.
"""
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

cmake, build, libdir, readme, cc, work = sys.argv[1:7]
extra = sys.argv[7:]
prefix = os.path.join(work, "prefix")
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, file=sys.stderr)
    return cond


def run(cmd, **kw):
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
    return r


def die(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def readme_example(path):
    """Lines of the first ```c block after the section heading."""
    text = open(path, encoding="utf-8").read()
    m = re.search(r"^## The C API in ten lines\n(.*?)^```c\n(.*?)^```", text, re.S | re.M)
    if not m:
        die(f"{path}: no ```c block under '## The C API in ten lines'")
    return m.group(2).splitlines()


shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)

# cmake --install rewrites BUILD_DIR/install_manifest.txt; keep the one a real
# install left, which is what uninstalling reads.
manifest = os.path.join(build, "install_manifest.txt")
saved = open(manifest, "rb").read() if os.path.exists(manifest) else None
try:
    r = run([cmake, "--install", build, "--prefix", prefix])
finally:
    if saved is None:
        if os.path.exists(manifest):
            os.remove(manifest)
    else:
        open(manifest, "wb").write(saved)
if r.returncode != 0:
    die("cmake --install failed")

env = dict(os.environ)
env["PKG_CONFIG_PATH"] = os.path.join(prefix, libdir, "pkgconfig")
env.pop("PKG_CONFIG_LIBDIR", None)
env.pop("PKG_CONFIG_SYSROOT_DIR", None)
env["LD_LIBRARY_PATH"] = os.path.join(prefix, libdir)

pc = open(os.path.join(prefix, libdir, "pkgconfig", "loupe.pc")).read()
check(re.search(r"^prefix=" + re.escape(prefix) + r"$", pc, re.M), f"loupe.pc does not name the install prefix {prefix}:\n{pc}")

# The example is a whole program; only the run is made small before its lp_train
# call (the README trains VGG16 at 224x224 for 50 epochs). It prints the
# probabilities it predicts as "probs P0 P1".
lines = readme_example(readme)
if not any(l.startswith("int main(") for l in lines):
    die("README example is not a whole program (no int main)")
at = next((i for i, l in enumerate(lines) if "lp_train(&p" in l), None)
if at is None:
    die("README example has no lp_train(&p, ...) call to make small")
small = '    p.model = "tiny"; p.height = p.width = 32; p.epochs = 2; p.threads = 2;  /* test: seconds, not hours */'
src = "\n".join(lines[:at] + [small] + lines[at:] + [""])
example_c = os.path.join(work, "example.c")
open(example_c, "w").write(src)
print(src)

r = run(["pkg-config", "--cflags", "--libs", "loupe"], env=env)
if not check(r.returncode == 0, "pkg-config --cflags --libs loupe failed"):
    sys.exit(1)
flags = shlex.split(r.stdout)
example = os.path.join(work, "example")
r = run([cc, "-Werror=implicit-function-declaration", "-o", example, example_c] + extra + flags, env=env)
if not check(r.returncode == 0, "the README example does not build with pkg-config's flags"):
    sys.exit(1)

# Static: every library libloupe.a needs must come from loupe.pc.
r = run(["pkg-config", "--static", "--cflags", "--libs", "loupe"], env=env)
if check(r.returncode == 0, "pkg-config --static --cflags --libs loupe failed"):
    archive = os.path.join(prefix, libdir, "libloupe.a")
    flags = [archive if f == "-lloupe" else f for f in shlex.split(r.stdout)]
    check(archive in flags, f"no -lloupe in pkg-config --static --libs: {r.stdout}")
    r = run([cc, "-o", example + "-static", example_c] + extra + flags, env=env)
    check(r.returncode == 0, "the README example does not link libloupe.a with pkg-config --static's flags")

# Data where the example looks for it: two classes, a few 28x28 images each.
r = run([os.path.join(prefix, "bin", "loupe"), "fashion", "--out", os.path.join(work, "positive-negative"),
         "--train", "8", "--valid", "4", "--test", "1"], env=env)
if r.returncode != 0:
    die("loupe fashion failed (dataset-fashion-mnist installed?)")
test_pos = os.path.join(work, "positive-negative", "test", "positive")
shutil.copy(os.path.join(test_pos, sorted(os.listdir(test_pos))[0]), os.path.join(work, "x.png"))

# Without its data the program must stop at lp_train and print lp_errmsg()'s line.
empty = os.path.join(work, "empty")
os.makedirs(empty)
r = run([example], cwd=empty, env=env, timeout=300)
check(r.returncode == 1 and "positive-negative" in r.stderr,
      f"the README example without data: exit {r.returncode} (want 1), stderr {r.stderr!r} (want lp_errmsg() naming the data folder)")

r = run([example], cwd=work, env=env, timeout=300)
check(r.returncode == 0, f"the README example exited with {r.returncode}")
print(r.stdout)
ldd = run(["ldd", example], env=env)
check(os.path.join(prefix, libdir, "libloupe.so") in ldd.stdout, f"the example did not load the installed libloupe.so:\n{ldd.stdout}")
check(os.path.exists(os.path.join(work, "runs", "seed", "checkpoints", "best.safetensors")), "no runs/seed/checkpoints/best.safetensors")
m = re.search(r"^probs (\S+) (\S+)$", r.stdout, re.M)
if check(m, "no probabilities printed"):
    probs = [float(m.group(1)), float(m.group(2))]
    check(all(math.isfinite(x) and 0 <= x <= 1 for x in probs) and abs(sum(probs) - 1) < 1e-5,
          f"predicted probabilities {probs} are not a distribution over 2 classes")

if failures:
    sys.exit(1)
print("install_pkgconfig: ok")
