#!/bin/sh
# clean_on_pass.sh DIR CMD...: runs a test, then deletes its work folder DIR
# if it passed (exit 0). The weights and training tests leave VGG-sized
# fixtures and checkpoints (0.2-1 GB per test, 5 GB in all) that a CI
# machine's disk may not hold; a failed or skipped test keeps its folder to be
# looked at. DIR must be this test's own folder: no other test may share it.
dir=$1
shift
"$@"
rc=$?
[ "$rc" -eq 0 ] && rm -rf "$dir"
exit "$rc"
