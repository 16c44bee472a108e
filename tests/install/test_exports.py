"""install_exports: libloupe.so exports the public API and nothing else.

usage: test_exports.py NM LIBRARY HEADER

The dynamic symbols LIBRARY defines (`NM -D --defined-only`) must be exactly
the functions HEADER (include/loupe.h) declares with LP_API, and every function
HEADER declares must carry LP_API. An internal function that leaks (a build
without hidden visibility) or a public one that is not exported (a missing
LP_API) fails the test.
"""
import re
import subprocess
import sys

nm, library, header = sys.argv[1:4]

# Names the linker (section bounds included) or the sanitizers' and coverage
# instrumentation define; names that are no C identifier (clang's OpenMP lock
# `.gomp_critical_user_.reduction.var`) come from the compiler, not the source.
TOOLCHAIN = {"_init", "_fini", "_edata", "_end", "__bss_start"}
TOOLCHAIN_PREFIXES = ("__asan", "__odr_asan", "__ubsan", "__lsan", "__sanitizer", "__sancov",
                      "__start_", "__stop_")


def declarations(path):
    """(name, has LP_API) for each function declared at file scope in a C header."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^\s*#[^\n]*", " ", text, flags=re.M)  # directives (and the LP_API definition)
    text = text.replace('extern "C" {', " ")
    # Keep file-scope text only: struct, union and enum bodies go.
    flat, depth = [], 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        elif depth == 0:
            flat.append(ch)
    out = []
    for stmt in "".join(flat).split(";"):
        stmt = " ".join(stmt.split())
        if "(" not in stmt or stmt.startswith("typedef"):
            continue
        m = re.search(r"(\w+)\s*\($", stmt[: stmt.index("(") + 1])
        if not m:
            sys.exit(f"FAIL: cannot read the declaration '{stmt}' in {path}")
        out.append((m.group(1), re.search(r"\bLP_API\b", stmt) is not None))
    return out


decls = declarations(header)
public = {name for name, marked in decls if marked}
unmarked = sorted(name for name, marked in decls if not marked)
if len(public) < 10:
    sys.exit(f"FAIL: only {len(public)} LP_API declarations found in {header}; the parser is broken")

r = subprocess.run([nm, "-D", "--defined-only", library], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(f"FAIL: {nm} -D --defined-only {library}:\n{r.stderr}")
exported = set()
for line in r.stdout.splitlines():
    fields = line.split()
    if len(fields) < 3:
        continue
    name = fields[2].split("@")[0]
    if name in TOOLCHAIN or name.startswith(TOOLCHAIN_PREFIXES) or not re.fullmatch(r"[A-Za-z_]\w*", name):
        continue
    exported.add(name)

failures = []
if unmarked:
    failures.append(f"declared in {header} without LP_API: {', '.join(unmarked)}")
missing = sorted(public - exported)
if missing:
    failures.append(f"declared LP_API but not exported by {library}: {', '.join(missing)}")
extra = sorted(exported - public)
if extra:
    shown = ", ".join(extra[:20]) + (f" ... ({len(extra)} in all)" if len(extra) > 20 else "")
    failures.append(f"exported by {library} but not public API (hidden visibility lost?): {shown}")
for f in failures:
    print("FAIL:", f, file=sys.stderr)
if failures:
    sys.exit(1)
print(f"ok: {len(public)} public functions, exactly the library's {len(exported)} exports")
