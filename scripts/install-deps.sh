#!/bin/bash
# Installs the system packages the tests and the demo need (idempotent; root required).
set -euo pipefail
pkgs=(conntrack conntrackd keepalived nftables iproute2 iputils-ping python3-venv prometheus)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# conntrackd from Debian starts a system instance; the tests run their own daemons. prometheus is
# installed for promtool (the alert rules' checks): its own server is not wanted either.
for unit in conntrackd prometheus prometheus-node-exporter; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
done
modprobe nf_conntrack 2>/dev/null || true
modprobe nf_conntrack_netlink 2>/dev/null || true
