#!/bin/bash
# Build the release artifacts into dist/ (or $1): the wheel of our Python package and the Ansible collection
# ctpy.conntrack_tools, which carries that wheel (roles/conntrack_tools/files/) so nodes install our package
# from the collection itself. Used by `make dist` and by the lab (molecule/collections.sh).
#   scripts/build-dist.sh [OUTDIR]      prints the collection tarball's path on stdout
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)
venv=${VENV:-$repo/.venv}
python=$venv/bin/python
[[ -x $python ]] || python=python3
galaxy=$venv/bin/ansible-galaxy
[[ -x $galaxy ]] || galaxy=ansible-galaxy
version=$(sed -n 's/^version: *//p' "$repo/galaxy.yml")
[[ -n $version ]] || { echo "build-dist: no version in galaxy.yml" >&2; exit 1; }
files=$repo/roles/conntrack_tools/files
cd "$repo"
# A stale build/lib would put deleted modules back into the wheel.
rm -rf build "$out"/conntrack_tools_py-*.whl "$files"/conntrack_tools_py-*.whl
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" . 2> >(grep -v "is ignored: it is neither" >&2)
wheel=$out/conntrack_tools_py-$version-py3-none-any.whl
[[ -f $wheel ]] || { echo "build-dist: $wheel was not built (version mismatch?)" >&2; exit 1; }
mkdir -p "$files"
cp "$wheel" "$files/"
"$galaxy" collection build --force --output-path "$out" "$repo" >/dev/null
tarball=$out/ctpy-conntrack_tools-$version.tar.gz
[[ -f $tarball ]] || { echo "build-dist: $tarball was not built" >&2; exit 1; }
echo "$tarball"
