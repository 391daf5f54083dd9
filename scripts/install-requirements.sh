#!/bin/sh
# Installs a requirements file into .venv: with uv (fetched from PyPI into .venv; it made a
# fresh .venv in about a third of pip's time here, see scripts/measure-installers.sh), or with
# plain pip when uv cannot be had or fails (no PyPI, only a local index, an odd platform).
# Usage: scripts/install-requirements.sh VENV REQUIREMENTS_FILE
set -u
venv="$1"
req="$2"
if "$venv/bin/pip" install --quiet --disable-pip-version-check uv >/dev/null 2>&1 \
        && "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -r "$req"; then
    exit 0
fi
echo "(uv unavailable or failed: installing with pip instead)"
exec "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
