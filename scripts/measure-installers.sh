#!/bin/sh
# Times two ways of making `make run`'s .venv from requirements.txt, each from nothing (fresh
# venv, no cache), in the same run: plain pip, and pip installing uv (from PyPI) which then
# installs the requirements. The Makefile uses uv because it at least halved the time here.
# Usage: scripts/measure-installers.sh [ROUNDS]   (default 2; about a minute each)
set -eu
cd "$(dirname "$0")/.."
req="$PWD/requirements.txt"
rounds="${1:-2}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
i=1
while [ "$i" -le "$rounds" ]; do
    t0=$(now)
    python3 -m venv "$work/pip"
    "$work/pip/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check -r "$req" 2>/dev/null
    t1=$(now)
    python3 -m venv "$work/uv"
    "$work/uv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check uv 2>/dev/null
    "$work/uv/bin/uv" pip install --quiet --no-cache --python "$work/uv/bin/python" -r "$req"
    t2=$(now)
    echo "round $i: pip $(echo "$t1 - $t0" | bc | cut -c1-5) s, uv $(echo "$t2 - $t1" | bc | cut -c1-5) s (venv, pip install uv, uv pip install)"
    rm -rf "$work/pip" "$work/uv"
    i=$((i + 1))
done
