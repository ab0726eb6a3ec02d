#!/bin/bash
# Build the lab's node image (Debian bookworm + systemd + keepalived + nftables +
# the C conntrack tools) with debootstrap from the host's own apt mirror, and
# `podman import` it. No container registry is involved.
#
#   molecule/image/build.sh            build if needed, print the image reference
#   molecule/image/build.sh --force    rebuild even if the image exists
#
# Idempotent: the image is tagged with a hash of everything that decides its
# content (this script, the package list, the suite, the mirror, the arch).
# If that tag exists nothing happens (~0.1 s); if only the rootfs tarball of that
# hash is cached it is re-imported (~4 s); otherwise debootstrap runs (~1 min).
# `:latest` always points at the newest build. Needs root.
set -euo pipefail
# shellcheck source=../env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"

SUITE=bookworm
PACKAGES=(
    python3 python3-venv
    python3-pyroute2 python3-jinja2 python3-prometheus-client python3-yaml   # our package's dependencies
    python3-apt python3-packaging           # needed on the node by Ansible's apt and pip modules
    systemd systemd-sysv dbus kmod          # systemd as PID 1 (/sbin/init)
    keepalived nftables iptables iproute2 tcpdump
    conntrack conntrackd                    # the C tools, for comparison and interop runs
    procps iputils-ping
)
# Units the roles enable themselves (the stock conntrackd.conf would fail at
# boot) and units that make no sense in a container.
DISABLE_UNITS=(keepalived.service conntrackd.service e2scrub_reap.service)
MASK_UNITS=(systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
    systemd-udev-trigger.service getty.target console-getty.service systemd-remount-fs.service)

force=0
[[ ${1:-} == --force ]] && force=1
[[ $EUID -eq 0 ]] || ctpy_die "run as root (debootstrap and rootful podman)"

ctpy_host_packages

# The host's configured Debian mirror for $SUITE, as apt itself resolves it
# (deb822 .sources and one-line sources.list alike). Never a hard-coded host.
host_mirror() {
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER) $(TARGET_OF)' 2>/dev/null |
        awk -v s="$SUITE" '$2 == s && $3 == "Packages" && $4 == "deb" { print $1; exit }'
}
MIRROR=${CTPY_MIRROR:-$(host_mirror)}
[[ -n $MIRROR ]] || ctpy_die "no '$SUITE' deb source in the host's apt configuration (set CTPY_MIRROR)"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ARCH=$(dpkg --print-architecture)

hash=$( {
    cat "${BASH_SOURCE[0]}"
    printf '%s\n' "$SUITE" "$MIRROR" "$ARCH" "${PACKAGES[@]}"
} | sha256sum | cut -c1-12)
IMAGE="$CTPY_IMAGE_REPO:$hash"
TARBALL="$CTPY_CACHE_DIR/ctpy-bookworm-ha-$hash.tar"

import_tarball() {
    local t0=$SECONDS
    podman import --quiet \
        --change 'CMD ["/sbin/init"]' \
        --change 'STOPSIGNAL SIGRTMIN+3' \
        --change 'ENV container=podman' \
        --message "ctpy lab node, bookworm, content hash $hash" \
        "$TARBALL" "$IMAGE" >/dev/null
    podman tag "$IMAGE" "$CTPY_IMAGE_REPO:latest"
    ctpy_log "imported $IMAGE in $((SECONDS - t0)) s"
    # Drop the images of older content hashes (a container still using one keeps it).
    local old
    for old in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$CTPY_IMAGE_REPO"); do
        [[ $old == "$IMAGE" || $old == "$CTPY_IMAGE_REPO:latest" ]] || podman rmi "$old" >/dev/null 2>&1 || true
    done
}

if ((!force)) && podman image exists "$IMAGE"; then
    podman tag "$IMAGE" "$CTPY_IMAGE_REPO:latest"
    ctpy_log "image $IMAGE is up to date"
    echo "$IMAGE"
    exit 0
fi

if ((!force)) && [[ -s $TARBALL ]]; then
    import_tarball
    echo "$IMAGE"
    exit 0
fi

mkdir -p "$CTPY_CACHE_DIR"
work=$(mktemp -d "$CTPY_CACHE_DIR/build-$hash.XXXXXX")
cleanup() {
    # Never leave a half-built rootfs (with /proc possibly mounted) behind.
    umount -R "$work/rootfs/proc" 2>/dev/null || true
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

rootfs="$work/rootfs"
t_start=$SECONDS
ctpy_log "debootstrap $SUITE ($ARCH) from $MIRROR: ${#PACKAGES[@]} extra packages"
include=$(IFS=,; echo "${PACKAGES[*]}")
if ! debootstrap --variant=minbase --arch="$ARCH" --keyring="$KEYRING" --include="$include" \
    "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    ctpy_die "debootstrap failed"
fi
t_debootstrap=$((SECONDS - t_start))
untrimmed=$(du -sm "$rootfs" | cut -f1)

# debootstrap copies the build host's hostname, systemd's postinst writes a
# fixed machine-id: reset both (an empty machine-id is filled in at boot).
echo localhost >"$rootfs/etc/hostname"
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
systemctl --root="$rootfs" disable "${DISABLE_UNITS[@]}" >/dev/null 2>&1 || true
systemctl --root="$rootfs" mask "${MASK_UNITS[@]}" >/dev/null 2>&1 || true
# Keep the image free of downloaded packages and docs; apt still works offline
# for `state: present` checks (the dpkg database stays).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/debootstrap
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
# Tell the roles' nodes that this image has no package index on purpose.
printf '%s\n' "ctpy lab node image $hash ($SUITE, $MIRROR)" >"$rootfs/etc/ctpy-image"
trimmed=$(du -sm "$rootfs" | cut -f1)

tar --numeric-owner --xattrs -C "$rootfs" -cf "$TARBALL.tmp" .
mv "$TARBALL.tmp" "$TARBALL"
# Keep only the tarball of this build.
find "$CTPY_CACHE_DIR" -maxdepth 1 -name 'ctpy-bookworm-ha-*.tar' ! -name "${TARBALL##*/}" -delete
import_tarball
total=$((SECONDS - t_start))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
ctpy_log "built $IMAGE: debootstrap ${t_debootstrap} s, total ${total} s; rootfs ${untrimmed} MB untrimmed," \
    "${trimmed} MB trimmed; image $((size / 1000000)) MB"
echo "$IMAGE"
