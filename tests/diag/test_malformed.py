#!/usr/bin/env python3
"""diag_malformed: a missing or malformed run file gives one clear error that names
the file and the line, and a non-zero exit (2 for malformed data).
Usage: test_malformed.py LOUPE_CLI WORKDIR"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfixtures as rf  # noqa: E402

CLI, WORK = sys.argv[1], sys.argv[2]
os.makedirs(WORK, exist_ok=True)
FAIL = []
BASE = os.path.join(WORK, "malformed-base")
shutil.rmtree(BASE, ignore_errors=True)
rf.single_class(BASE)  # 12 epochs x 52 images, 2 classes; prediction rows start at line 2


def case(name, file, edit, expect, rc=2):
    run = os.path.join(WORK, "malformed-" + name)
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(BASE, run)
    path = os.path.join(run, file)
    if edit is None:
        os.unlink(path)
    else:
        with open(path) as f:
            lines = f.read().split("\n")
        edit(lines)
        with open(path, "w") as f:
            f.write("\n".join(lines))
    out = subprocess.run([CLI, "diagnose", run, "--no-report"], capture_output=True, text=True)
    err = out.stderr.strip()
    ok = out.returncode == rc and all(e in err for e in expect) and len(err.splitlines()) <= 2 and out.stdout == ""
    if not ok:
        FAIL.append(name)
        print(f"FAIL {name}: exit {out.returncode} (expected {rc}), stderr: {err!r}, expected to contain {expect}")
    else:
        print(f"ok   {name}: {err}")


def setl(i, text):
    def f(lines):
        lines[i] = text
    return f


def replace_field(i, col, value):
    def f(lines):
        parts = lines[i].split(",")
        parts[col] = value
        lines[i] = ",".join(parts)
    return f


P, H = "valid_predictions.csv", "history.csv"
case("history-header", H, setl(0, "epoch,loss,accuracy,val_acc,lr"), ["history.csv:1", "val_loss"])
case("history-columns", H, setl(4, "4,0.5,0.6"), ["history.csv:5", "3 fields", "6"])
case("history-number", H, replace_field(3, 3, "abc"), ["history.csv:4", "val_loss", "'abc'"])
case("history-epoch", H, replace_field(2, 0, "2.5"), ["history.csv:3", "epoch"])
case("history-empty", H, lambda lines: lines.clear(), ["history.csv:1", "empty"])
case("history-missing", H, None, ["history.csv", "not found"], rc=1)
case("pred-header", P, setl(0, "epoch,file,label,p0,p1"), ["valid_predictions.csv:1", "header"])
case("pred-columns", P, setl(7, "1,valid/5.jpg,0,0.5"), ["valid_predictions.csv:8", "4 fields", "5"])
case("pred-number", P, replace_field(9, 3, "0.x"), ["valid_predictions.csv:10", "p0", "'0.x'"])
case("pred-sum", P, replace_field(12, 4, "0.9"), ["valid_predictions.csv:13", "sum to"])
case("pred-range", P, replace_field(14, 3, "1.5"), ["valid_predictions.csv:15", "p0"])
case("pred-label", P, replace_field(20, 2, "2"), ["valid_predictions.csv:21", "label 2", "out of range"])
case("pred-label-text", P, replace_field(21, 2, "dog"), ["valid_predictions.csv:22", "label"])
case("pred-epoch", P, replace_field(30, 0, "x"), ["valid_predictions.csv:31", "epoch"])
case("pred-duplicate", P, setl(40, "1,valid/0.jpg,0,0.5,0.5"), ["valid_predictions.csv:41", "valid/0.jpg", "twice"])
case("pred-label-changes", P, replace_field(60, 2, "1"), ["valid_predictions.csv:61", "differs from line 9"])
case("pred-unknown-path", P, replace_field(70, 1, "valid/new.jpg"), ["valid_predictions.csv:71", "valid/new.jpg", "not among"])
case("pred-quote", P, setl(80, '2,"valid/26.jpg,0,0.5,0.5'), ["valid_predictions.csv:81", "quote"])
case("pred-missing-rows", P, lambda lines: lines.pop(100), ["valid_predictions.csv:", "epoch 2 has 51 rows"])
case("pred-empty", P, lambda lines: lines.clear(), ["valid_predictions.csv:1", "empty"])
case("pred-header-only", P, lambda lines: lines.__setitem__(slice(1, None), [""]), ["valid_predictions.csv", "no prediction rows"])
case("pred-missing", P, None, ["valid_predictions.csv", "not found"], rc=1)
case("runjson-syntax", "run.json", setl(3, '  "config": {,'), ["run.json:4", "JSON"])
case("runjson-classes", "run.json", lambda lines: lines.__setitem__(slice(None), [
    '{"classes": ["a", "b", "c"], "config": {}}']), ["valid_predictions.csv:1", "3 classes"])

if FAIL:
    print(f"{len(FAIL)} failure(s): {FAIL}")
    sys.exit(1)
print("diag_malformed: all checks passed")
