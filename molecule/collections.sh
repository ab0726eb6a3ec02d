#!/bin/bash
# Install the Ansible collections the lab needs: containers.podman into
# molecule/.collections, and our own collection, built from this tree, into the
# clean path molecule/.state/collections (both on ANSIBLE_COLLECTIONS_PATH, set by
# molecule/env.sh and the scenarios). Ansible Galaxy is not
# reachable from here, so they are taken from the PyPI `ansible` bundle wheel,
# pinned by version and sha256, and only the listed collections are unpacked
# (containers.podman is ~0.8 MB; the whole bundle would add ~470 MB to the venv).
#
# containers.podman is idempotent: a stamp records the wheel hash and the
# collection list; a second run does nothing (~0.05 s). Ours is rebuilt and
# reinstalled every time (~5 s). Needs only pip (the project venv's) and network
# access to the configured Python package index, once.
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

ANSIBLE_BUNDLE_VERSION=12.3.0
ANSIBLE_BUNDLE_SHA256=cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414
# containers.podman 1.18.0 ships in ansible 12.3.0: the podman connection plugin
# (ansible_connection: containers.podman.podman) and the podman_* modules.
COLLECTIONS=(containers/podman)

PYTHON=${PYTHON:-$CTPY_REPO/.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
dest="$CTPY_MOLECULE/.collections"
stamp="$dest/.ctpy-stamp"
want="ansible==$ANSIBLE_BUNDLE_VERSION sha256:$ANSIBLE_BUNDLE_SHA256 ${COLLECTIONS[*]}"

if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
    ctpy_log "collections up to date in $dest (${COLLECTIONS[*]} from ansible $ANSIBLE_BUNDLE_VERSION)"
else

dl="$CTPY_CACHE_DIR/wheels"
mkdir -p "$dl"
wheel="$dl/ansible-$ANSIBLE_BUNDLE_VERSION-py3-none-any.whl"
if ! [[ -f $wheel ]] || ! echo "$ANSIBLE_BUNDLE_SHA256  $wheel" | sha256sum -c --quiet 2>/dev/null; then
    req=$(mktemp)
    trap 'rm -f "$req"' EXIT
    echo "ansible==$ANSIBLE_BUNDLE_VERSION --hash=sha256:$ANSIBLE_BUNDLE_SHA256" >"$req"
    ctpy_log "pip download ansible==$ANSIBLE_BUNDLE_VERSION (wheel only, no deps)"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes -r "$req" -d "$dl"
fi

"$PYTHON" - "$wheel" "$dest" "${COLLECTIONS[@]}" <<'EOF'
import json, shutil, sys, zipfile
from pathlib import Path

wheel, dest, colls = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for coll in colls:
        prefix = f"ansible_collections/{coll}/"
        members = [m for m in z.namelist() if m.startswith(prefix)]
        if not members:
            sys.exit(f"{coll} is not in {wheel}")
        target = dest / "ansible_collections" / coll
        if target.exists():
            shutil.rmtree(target)
        for m in members:
            z.extract(m, dest)
        version = json.loads((target / "MANIFEST.json").read_text())["collection_info"]["version"]
        print(f"installed {coll.replace('/', '.')} {version} into {dest}", file=sys.stderr)
EOF
echo "$want" >"$stamp"
fi

# Our collection: built from this tree (wheel + tarball, scripts/build-dist.sh) and installed into a
# clean collections path every time, so the lab runs exactly what the artifact ships.
t0=$SECONDS
tarball=$(VENV=${VENV:-$CTPY_REPO/.venv} bash "$CTPY_REPO/scripts/build-dist.sh" "$CTPY_STATE/dist")
ours="$CTPY_STATE/collections"
rm -rf "$ours"
mkdir -p "$ours"
galaxy=$(dirname "$PYTHON")/ansible-galaxy
[[ -x $galaxy ]] || galaxy=ansible-galaxy
"$galaxy" collection install --offline -p "$ours" "$tarball" >/dev/null
ctpy_log "installed ${tarball##*/} into $ours ($((SECONDS - t0)) s)"
