#!/usr/bin/env bash
# Refresh the vendored axe-core (tests/browser/vendor/) from the npm registry:
#   scripts/update-axe.sh 4.14.1
# The tarball is checked against the registry's sha512 before anything is copied, and
# axe.min.js is copied byte for byte: its MPL-2.0 header must stay as Deque wrote it.
# Then update AXE_VERSION and AXE_SHA256 in tests/browser/support.py (the script prints both).
set -euo pipefail
version="${1:?usage: $0 VERSION}"
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/tests/browser/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
tarball="$(npm pack --silent "axe-core@$version")"
expected="$(npm view "axe-core@$version" dist.integrity)"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$expected" != "$actual" ]; then
    echo "integrity mismatch for axe-core@$version: registry says $expected, tarball is $actual" >&2
    exit 1
fi
tar xzf "$tarball"
cp package/axe.min.js "$vendor/axe.min.js"
cp package/LICENSE "$vendor/LICENSE-axe-core"
cp package/LICENSE-3RD-PARTY.txt "$vendor/LICENSE-axe-core-3RD-PARTY.txt"
echo "AXE_VERSION = \"$version\""
echo "AXE_SHA256 = \"$(sha256sum "$vendor/axe.min.js" | cut -d' ' -f1)\""
