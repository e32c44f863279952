#!/usr/bin/env bash
# Install Synapse (from PyPI) into a venv kept across runs, if it is not
# there yet. Prints the venv's path. Used by .ci/run and by the test
# harness (tests/src/synapse.rs), so `cargo test` works on a fresh machine.
set -euo pipefail

version="1.163.2"
cache="${SURFACES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/surfaces}"
venv="${SURFACES_SYNAPSE_VENV:-$cache/synapse-venv-$version}"
mkdir -p "$(dirname "$venv")"

# Parallel test binaries may ask at once: one installs, the others wait.
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/register_new_matrix_user" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$version" >&2
fi
echo "$venv"
