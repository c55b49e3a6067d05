#!/usr/bin/env bash
# Takes the README's picture of the dashboard: runs the browser test, which saves
# the page mid-job when CORRAL_SCREENSHOT is set. Needs chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
shot=$(mktemp)
trap 'rm -f "$shot"' EXIT
cargo build --workspace
CORRAL_SCREENSHOT="$shot" cargo test -p corral-tests --test dashboard -- --nocapture
base64 -d "$shot" > docs/dashboard.png
echo "wrote docs/dashboard.png"
