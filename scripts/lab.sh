#!/bin/bash
# The four-node container lab (client -- fw1/fw2 -- server), driven without Molecule.
#
#   scripts/lab.sh up       host packages, node image, collection, containers, rollout (idempotent)
#   scripts/lab.sh status   containers, each firewall's VRRP role, VIPs, conntrackd
#   scripts/lab.sh verify   tests/molecule (pytest + testinfra over podman://) against the running lab
#   scripts/lab.sh down     remove the lab's containers and networks (by the ctpy- name prefix only)
#
# Uses the same inventory and playbooks as `molecule test` (molecule/default/).
# Needs root (rootful podman, debootstrap) and the project venv (.venv, `make venv`).
# Extra arguments after `up` go to the converge ansible-playbook run, e.g.
#   scripts/lab.sh up -e '{"conntrack_tools_binaries": ["conntrack", "conntrackd"]}'
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../molecule/env.sh
source "$REPO/molecule/env.sh"

SCENARIO="$CTPY_MOLECULE/default"
INVENTORY="$SCENARIO/inventory"
VENV=${VENV:-$REPO/.venv}
export PATH="$VENV/bin:$PATH"

need_venv() {
    [[ -x $VENV/bin/ansible-playbook ]] || ctpy_die "no ansible-playbook in $VENV: run 'make venv' first"
    "$VENV/bin/python" -c 'import testinfra' 2>/dev/null || ctpy_die "pytest-testinfra missing in $VENV ('make venv')"
}

playbook() { ansible-playbook -i "$INVENTORY" "$@"; }

lab_containers() { podman ps -a --filter "name=^$CTPY_PREFIX" --format '{{.Names}}' 2>/dev/null; }

cmd_up() {
    [[ $EUID -eq 0 ]] || ctpy_die "run as root (rootful podman)"
    need_venv
    local t0=$SECONDS t
    ctpy_host_packages
    "$CTPY_MOLECULE/image/build.sh" >/dev/null
    "$CTPY_MOLECULE/collections.sh"
    t=$SECONDS
    playbook "$SCENARIO/create.yml"
    ctpy_log "create: $((SECONDS - t)) s"
    t=$SECONDS
    playbook "$SCENARIO/converge.yml" "$@"
    ctpy_log "converge: $((SECONDS - t)) s; lab up in $((SECONDS - t0)) s"
    cmd_status
}

cmd_down() {
    local t0=$SECONDS
    if command -v ansible-playbook >/dev/null && [[ -d $CTPY_MOLECULE/.collections ]]; then
        playbook "$SCENARIO/destroy.yml" >/dev/null
    fi
    # Belt and braces: anything left with the lab's prefix (e.g. a half-created lab).
    local c n
    for c in $(lab_containers); do podman rm --force --time 2 "$c" >/dev/null; done
    for n in $(podman network ls --filter "name=^$CTPY_PREFIX" --format '{{.Name}}' 2>/dev/null); do
        podman network rm --force "$n" >/dev/null
    done
    ctpy_log "lab removed in $((SECONDS - t0)) s (image $CTPY_IMAGE_REPO kept; podman rmi it to free ~230 MB)"
}

# One line per firewall: VRRP state per instance (keepalived's SIGUSR1 data dump),
# VIPs held, conntrackd state and cache sizes.
fw_status() {
    local c=$1
    podman exec "$c" sh -c '
        pid=$(systemctl show -p MainPID --value keepalived 2>/dev/null)
        states=none
        if [ -n "$pid" ] && [ "$pid" != 0 ]; then
            rm -f /tmp/keepalived.data; kill -USR1 "$pid"
            for i in 1 2 3 4 5 6 7 8 9 10; do [ -s /tmp/keepalived.data ] && break; sleep 0.1; done
            states=$(awk "/VRRP Instance =/ {i=\$4} /^ *State = / && i {printf \"%s%s=%s\", sep, i, \$3; sep=\" \"; i=\"\"}" /tmp/keepalived.data)
        fi
        held=$(ip -4 -o addr show | awk "/ secondary / {print \$4 \"@\" \$2}" | tr "\n" " ")
        ct=$(systemctl is-active conntrackd 2>/dev/null || true)
        int=$(conntrackd -i 2>/dev/null | wc -l); ext=$(conntrackd -e 2>/dev/null | wc -l)
        printf "%-8s %-44s conntrackd=%-8s internal=%-5s external=%-5s VIPs: %s\n" \
            "$(hostname)" "$states" "$ct" "$int" "$ext" "${held:-none}"
    ' 2>/dev/null || printf '%-8s not reachable\n' "${c#"$CTPY_PREFIX"}"
}

cmd_status() {
    local containers
    containers=$(lab_containers)
    if [[ -z $containers ]]; then
        echo "lab is down (no ${CTPY_PREFIX}* containers)"
        return 0
    fi
    podman ps -a --filter "name=^$CTPY_PREFIX" --format '{{.Names}}\t{{.Status}}\t{{.Image}}'
    echo
    local c
    for c in ${CTPY_PREFIX}fw1 ${CTPY_PREFIX}fw2; do
        grep -qx "$c" <<<"$containers" && fw_status "$c"
    done
    return 0
}

cmd_verify() {
    need_venv
    CTPY_LAB=1 CTPY_LAB_INVENTORY="$INVENTORY" "$VENV/bin/python" -m pytest -p no:cacheprovider \
        "$REPO/tests/molecule" "$@"
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
verify) shift; cmd_verify "$@" ;;
*)
    echo "usage: $0 {up [ansible-playbook args]|down|status|verify [pytest args]}" >&2
    exit 2
    ;;
esac
