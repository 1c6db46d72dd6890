#!/usr/bin/env bash
# Checks that vendor/candle-core is candle-core 0.11.1 exactly as published on crates.io but
# for src/backprop.rs (the patch, vendor/candle-core/PATCHED.md) and PATCHED.md itself:
# every other published file unchanged, none missing, none added, and the patch still there.
# vendor/candle-core-0.11.1.sha256 lists the published files' hashes (how it was made is in
# PATCHED.md). CI runs this; so can anyone after touching the vendored tree.
set -euo pipefail
cd "$(dirname "$0")/../vendor/candle-core"
manifest=../candle-core-0.11.1.sha256
patched=src/backprop.rs

if ! grep -v "  $patched\$" "$manifest" | sha256sum --quiet --check -; then
    echo "vendor/candle-core: the files above differ from candle-core 0.11.1 as published" >&2
    exit 1
fi
if grep "  $patched\$" "$manifest" | sha256sum --quiet --check - >/dev/null 2>&1; then
    echo "vendor/candle-core: $patched is the published one; the patch is gone" >&2
    exit 1
fi
present=$(find . -type f ! -path ./PATCHED.md | sed 's|^\./||' | LC_ALL=C sort)
published=$(sed 's/^[0-9a-f]*  //' "$manifest" | LC_ALL=C sort)
if [ "$present" != "$published" ]; then
    echo "vendor/candle-core: files added or removed against candle-core 0.11.1:" >&2
    diff <(echo "$published") <(echo "$present") >&2 || true
    exit 1
fi
echo "vendor/candle-core: candle-core 0.11.1 as published, but for $patched"
