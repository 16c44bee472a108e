"""data_scan: folder semantics. Class order (sorted like Python's sorted(), or
given with --classes like Keras classes=), file order within a class equal to
Keras' flow_from_directory (sorted os.walk, recursing into subfolders), hidden
folders skipped, symlinks ignored unless followed, validation/ accepted,
validation_split stratified per class and deterministic from the seed, duplicate
files across splits reported, and dataset problems (empty class, one class,
unknown folder in valid/, both valid/ and validation/) exit 2."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import Checker, fresh_dir, noise_image, run_tool  # noqa: E402

tool, cli, tmp = sys.argv[1], sys.argv[2], fresh_dir(sys.argv[3])
C = Checker("data_scan")
seed = [0]


def img(p, fmt="PNG"):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    seed[0] += 1
    noise_image(12, 9, seed[0]).save(p, format=fmt)


def loupe_data(*args):
    r = subprocess.run([cli, "data", *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def keras_order(class_dir):
    """keras.preprocessing.image._iter_valid_files order (sorted os.walk, then sorted names)."""
    out = []
    for root, _, files in sorted(os.walk(class_dir), key=lambda x: x[0]):
        for f in sorted(files):
            out.append(os.path.relpath(os.path.join(root, f), os.path.dirname(os.path.dirname(class_dir))))
    return out


# ---- class and file order ------------------------------------------------------
D = os.path.join(tmp, "order")
for cls in ("beta", "Zeta", "alpha"):
    for rel in ("b.png", "a.png", "A.png", "sub/z.png", "sub-x/y.png", "sub/deeper/c.png", "a b.png", "é.png"):
        img(os.path.join(D, "train", cls, rel))
    for rel in ("v1.png", "v2.png"):
        img(os.path.join(D, "validation", cls, rel))
img(os.path.join(D, "train", ".ipynb_checkpoints", "x.png"))  # hidden folder: not a class
img(os.path.join(D, "train", "alpha", ".hidden", "x.png"))      # hidden subfolder: skipped
out = run_tool(tool, "scan", D)
C.check(out[0] == "CLASSES train Zeta alpha beta", f"sorted classes: {out[0]}")
got = [l.split(" ", 2)[2] for l in out if l.startswith("train ")]
want = []
for cls in ("Zeta", "alpha", "beta"):
    want += [p for p in keras_order(os.path.join(D, "train", cls)) if "/." not in p]
C.check(got == want, f"file order matches Keras:\n  got  {got[:9]}\n  want {want[:9]}")
labels = [int(l.split()[1]) for l in out if l.startswith("train ")]
C.check(labels == sorted(labels) and labels[0] == 0 and labels[-1] == 2, "labels class by class")
C.check(sum(1 for l in out if l.startswith("valid ")) == 6, "validation/ accepted as valid")
out = run_tool(tool, "scan", D, "--classes", "beta,alpha")
C.check(out[0] == "CLASSES train beta alpha", f"--classes order: {out[0]}")
C.check(all(" Zeta/" not in l for l in out), "classes not listed are left out")
C.check({l.split()[1] for l in out if l.startswith("train ") and l.split(" ", 2)[2].startswith("train/beta/")} == {"0"}, "beta is label 0")
rc, so, se = loupe_data(D, "--classes", "beta,alpha", "--json")
rep = json.loads(so)
C.check(rc == 0 and list(rep["splits"]["train"]["classes"]) == ["beta", "alpha"], f"--classes in loupe data ({rc} {se})")
out = run_tool(tool, "scan", D, "--classes", "beta,nope")
C.check(out[0].startswith("ERROR") and "no folder for class 'nope'" in "\n".join(out), f"unknown class: {out}")

# ---- symlinks ------------------------------------------------------------------
S = os.path.join(tmp, "links")
for cls in ("a", "b"):
    for i in range(2):
        img(os.path.join(S, "train", cls, f"{i}.png"))
img(os.path.join(tmp, "outside", "o1.png"))
img(os.path.join(tmp, "outside", "o2.png"))
os.symlink(os.path.join(tmp, "outside"), os.path.join(S, "train", "a", "linked_dir"))
os.symlink(os.path.join(S, "train", "b", "0.png"), os.path.join(S, "train", "a", "linked_file.png"))
os.symlink(os.path.join(S, "train"), os.path.join(S, "train", "b", "loop"))  # a loop when followed
rc, so, se = loupe_data(S, "--json")
rep = json.loads(so)
C.check(rc == 0 and rep["splits"]["train"]["classes"] == {"a": 2, "b": 2}, f"symlinks ignored by default: {rep['splits']['train']['classes']}")
C.check(rep["splits"]["train"]["ignored_detail"]["symlinks"] == 3, f"symlinks counted: {rep['splits']['train']['ignored_detail']}")
out = run_tool(tool, "scan", S, "--follow")
n_a = sum(1 for l in out if l.startswith("train 0 "))
C.check(n_a == 5, f"--follow-symlinks: class a has 2 + 2 + 1 images ({n_a})")

# ---- validation split ------------------------------------------------------------
V = os.path.join(tmp, "vsplit")
for cls, n in (("x", 10), ("y", 21)):
    for i in range(n):
        img(os.path.join(V, "train", cls, f"{i:02d}.png"))


def split_sets(s):
    out = run_tool(tool, "scan", V, "--vsplit", "0.2", "--seed", str(s))
    tr = {l.split()[2] for l in out if l.startswith("train ")}
    va = [l.split() for l in out if l.startswith("valid ")]
    return tr, va


tr1, va1 = split_sets(7)
tr1b, va1b = split_sets(7)
tr2, va2 = split_sets(8)
vset = {v[2] for v in va1}
C.check(sum(1 for v in va1 if v[1] == "0") == 2 and sum(1 for v in va1 if v[1] == "1") == 4, "stratified: round(0.2 * n) per class")
C.check(len(tr1) == 25 and not (tr1 & vset) and len(tr1 | vset) == 31, "train and valid partition the images")
C.check(va1 == va1b and tr1 == tr1b, "same seed, same split")
C.check(va1 != va2, "another seed, another split")
C.check([v[2] for v in va1] == sorted(v[2] for v in va1), "valid in sorted order")
rc, so, se = loupe_data(V, "--validation-split", "0.2", "--seed", "7", "--json")
rep = json.loads(so)
C.check(rc == 0 and rep["splits"]["valid"]["from_validation_split"] and rep["splits"]["valid"]["num_images"] == 6, "loupe data --validation-split")
rc, so, se = loupe_data(V, "--validation-split", "1.5")
C.check(rc == 2, "bad --validation-split is a usage error")

# ---- duplicates across splits -----------------------------------------------------
shutil.copy(os.path.join(V, "train", "x", "00.png"), os.path.join(V, "train", "y", "dup_in_other_class.png"))
os.makedirs(os.path.join(V, "test", "x"))
os.makedirs(os.path.join(V, "test", "y"))
shutil.copy(os.path.join(V, "train", "x", "01.png"), os.path.join(V, "test", "x", "leak.png"))
img(os.path.join(V, "test", "y", "fine.png"))
rc, so, se = loupe_data(V, "--json")
rep = json.loads(so)
groups = {tuple(g["paths"]): g for g in rep["duplicates"]}
g1 = groups.get(("train/x/01.png", "test/x/leak.png"))
g2 = groups.get(("train/x/00.png", "train/y/dup_in_other_class.png"))
C.check(g1 is not None and g1["across_splits"], f"leak across splits found: {list(groups)}")
C.check(g2 is not None and g2["conflicting_classes"] and not g2["across_splits"], "same image in two classes found")
C.check(rep["num_duplicates_across_splits"] == 1, "one cross-split duplicate")
rc, so, se = loupe_data(V)
C.check("across:  train/x/01.png = test/x/leak.png" in so, "text report shows the leak")

# ---- dataset problems -------------------------------------------------------------
P = os.path.join(tmp, "problems")
for cls in ("a", "b"):
    img(os.path.join(P, "train", cls, "1.png"))
os.makedirs(os.path.join(P, "valid", "a"))
img(os.path.join(P, "valid", "b", "1.png"))
img(os.path.join(P, "valid", "c", "1.png"))
rc, so, se = loupe_data(P, "--json")
rep = json.loads(so) if so else {"problems": []}
probs = " | ".join(rep["problems"])
C.check(rc == 2 and "valid/a/: no usable images" in probs and "valid/c/: folder is not a class" in probs, f"problems: rc {rc}: {probs}")
out = run_tool(tool, "scan", P)
C.check(out[0].startswith("ERROR") and "no usable images" in "\n".join(out), f"strict scan refuses an empty class: {out}")
O = os.path.join(tmp, "oneclass")
img(os.path.join(O, "train", "only", "1.png"))
rc, so, se = loupe_data(O)
C.check(rc == 2 and "at least 2" in so, "one class is a problem")
B = os.path.join(tmp, "both")
for s in ("train", "valid", "validation"):
    for cls in ("a", "b"):
        img(os.path.join(B, s, cls, "1.png"))
rc, so, se = loupe_data(B)
C.check(rc == 2 and "both valid/ and validation/" in se, f"valid and validation: {se}")
rc, so, se = loupe_data(os.path.join(tmp, "does-not-exist"))
C.check(rc == 2 and "no such folder" in se, f"missing folder: {se}")
rc, so, se = loupe_data(os.path.join(tmp, "outside"))
C.check(rc == 2 and "no train/ folder" in se, f"no train/: {se}")
rc, so, se = loupe_data(P, "--bogus")
C.check(rc == 2 and "unknown option" in se, "unknown option")
rc, so, se = loupe_data("--help")
C.check(rc == 0 and "usage: loupe data" in so, "--help")
# scanning a single class-folder directory (loupe evaluate CKPT DATA/test)
out = run_tool(tool, "scandir", os.path.join(V, "test"))
C.check(out == ["test 0 x/leak.png", "test 1 y/fine.png"], f"scan_dir: {out}")
C.done()
