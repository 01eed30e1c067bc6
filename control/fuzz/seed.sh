#!/usr/bin/env bash
# Writes the config target's seeds to corpus/config/: each shipped pipeline as raw text
# (mode byte 0) and as the base of a few edits (mode byte 1, seed index, edit records).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/config"
mkdir -p "$out"
i=0
# The same order as SEEDS in fuzz_targets/config.rs.
for f in dsr-ipip lab nat-gre-vpc; do
    # As the target's small_tables(): table_size 251 in every service, not 65537 by default.
    { printf '\x00'; grep -v '^ *table_size:' "$here/../../pipelines/$f.yaml" |
        sed -E 's/^( *)vip:(.*)$/\1vip:\2\n\1table_size: 251/'; } >"$out/raw-$f"
    # No edit: the seed as shipped. Then slot 0..5 given fragment 0..5 (-1, 0, -0.0, .nan, ...).
    printf "\\x01\\x$(printf %02x $i)" >"$out/seed-$f"
    for s in 0 1 2 3 4 5 6 7; do
        printf "\\x01\\x$(printf %02x $i)\\x$(printf %02x $((s * 7 + 3)))\\x00\\x$(printf %02x $((s + 3)))" \
            >"$out/edit-$f-$s"
    done
    i=$((i + 1))
done
ls "$out" | wc -l
