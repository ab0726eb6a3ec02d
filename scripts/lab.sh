#!/bin/bash
# The four-node container lab (client -- fw1/fw2 -- server), driven without Molecule.
#
#   scripts/lab.sh up        host packages, node image, collection, containers, rollout (idempotent)
#   scripts/lab.sh status    containers, each firewall's VRRP role, VIPs, conntrackd
#   scripts/lab.sh failover  100 TCP + 10 UDP flows through the pair: podman kill of the master, a clean
#                            keepalived stop, a no-sync control, each failed back (tests/molecule/failover.py)
#   scripts/lab.sh verify    tests/molecule (pytest + testinfra over podman://) against the running lab,
#                            including the checks on the last `failover` result
#   scripts/lab.sh demo      the README's main job, from a fresh machine: venv, host packages, image, lab,
#                            rollout, each node's role, connections, podman kill of the master, report
#   scripts/lab.sh soak      failback at scale: converge with a table for CTPY_SOAK_ENTRIES (200,000)
#                            background entries, fill the master, kill it, fail back (tests/molecule/soak.py)
#   scripts/lab.sh down      remove the lab's containers and networks (by the ctpy- name prefix only)
#
# Uses the same inventory and playbooks as `molecule test` (molecule/default/). CTPY_LAB_SCENARIO=interop
# layers molecule/interop/inventory on top (the C conntrackd on fw2), as `molecule test -s interop` does.
# Needs root (rootful podman, debootstrap) and the project venv (.venv, `make venv`; `demo` makes it).
# Extra arguments after `up` go to the converge ansible-playbook run, e.g.
#   scripts/lab.sh up -e '{"conntrackd_purge_timeout": 10}'
# and after `failover` to `tests/molecule/failover.py run` (e.g. --passes kill --tcp 200).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../molecule/env.sh
source "$REPO/molecule/env.sh"

SCENARIO="$CTPY_MOLECULE/default"
LAB_SCENARIO=${CTPY_LAB_SCENARIO:-default}
INVENTORIES=("$SCENARIO/inventory")
case $LAB_SCENARIO in
default) ;;
interop) INVENTORIES+=("$CTPY_MOLECULE/interop/inventory") ;;
*) ctpy_die "CTPY_LAB_SCENARIO must be default or interop, not '$LAB_SCENARIO'" ;;
esac
INVENTORY_ARGS=()
for i in "${INVENTORIES[@]}"; do INVENTORY_ARGS+=(-i "$i"); done
CTPY_LAB_INVENTORY=$(IFS=:; echo "${INVENTORIES[*]}")
export CTPY_LAB_INVENTORY
FAILOVER_RESULT="$CTPY_STATE/failover-$LAB_SCENARIO.json"
VENV=${VENV:-$REPO/.venv}
export PATH="$VENV/bin:$PATH"

need_venv() {
    [[ -x $VENV/bin/ansible-playbook ]] || ctpy_die "no ansible-playbook in $VENV: run 'make venv' first"
    "$VENV/bin/python" -c 'import testinfra' 2>/dev/null || ctpy_die "pytest-testinfra missing in $VENV ('make venv')"
}

playbook() { ansible-playbook "${INVENTORY_ARGS[@]}" "$@"; }

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
    CTPY_LAB=1 CTPY_LAB_FAILOVER="$FAILOVER_RESULT" "$VENV/bin/python" -m pytest -p no:cacheprovider \
        "$REPO/tests/molecule" "$@"
}

# Failback with a big table: the rebooted node's resync takes seconds, and readiness must hold it back.
# The kernel table limit is global (read-only in the containers): it must hold the entries in each netns.
cmd_soak() {
    need_venv
    local entries=${CTPY_SOAK_ENTRIES:-200000} max
    max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
    ((max >= entries + 20000)) ||
        ctpy_die "nf_conntrack_max is $max: raise it on the host (sysctl -w net.netfilter.nf_conntrack_max=$((entries * 5 / 4))) for $entries entries per node"
    # conntrackd's HashLimit (2 x the table) must take them too: converge with a table of that size
    cmd_up -e "{\"ha_firewall_nf_conntrack_max\": $max}"
    "$VENV/bin/python" "$REPO/tests/molecule/soak.py" --entries "$entries" "$@"
}

cmd_failover() {
    need_venv
    [[ -n $(lab_containers) ]] || ctpy_die "the lab is down: scripts/lab.sh up first"
    "$VENV/bin/python" "$REPO/tests/molecule/failover.py" run --out "$FAILOVER_RESULT" "$@"
}

# One line per firewall: node, VRRP role, which conntrackd the unit runs, VIPs.
node_roles() {
    local c
    for c in ${CTPY_PREFIX}fw1 ${CTPY_PREFIX}fw2; do
        podman exec "$c" sh -c '
            pid=$(systemctl show -p MainPID --value keepalived)
            rm -f /tmp/keepalived.data; kill -USR1 "$pid"
            for i in 1 2 3 4 5 6 7 8 9 10; do [ -s /tmp/keepalived.data ] && break; sleep 0.1; done
            role=$(awk "/VRRP Instance =/ {i=1} /^ *State = / && i {print \$3; i=0}" /tmp/keepalived.data |
                sort -u | tr "\n" " ")
            cpid=$(systemctl show -p MainPID --value conntrackd)
            case "$(tr "\0" " " </proc/$cpid/cmdline)" in
            /usr/sbin/conntrackd*) impl="C conntrackd 1.4.7 (/usr/sbin)" ;;
            *) impl="our Python conntrackd (/opt/conntrack-tools)" ;;
            esac
            vips=$(ip -4 -o addr show | awk "/ secondary / {print \$4}" | tr "\n" " ")
            printf "  %-4s %-8s %-44s VIPs: %s\n" "$(hostname)" "$role" "$impl" "${vips:-none}"
        ' 2>/dev/null || printf '  %-4s not reachable\n' "${c#"$CTPY_PREFIX"}"
    done
}

vip_holders() {
    local c n=0
    for c in ${CTPY_PREFIX}fw1 ${CTPY_PREFIX}fw2; do
        podman exec "$c" ip -4 -o addr show 2>/dev/null | grep -q ' secondary ' && n=$((n + 1))
    done
    echo "$n"
}

# The README's main job. The verbose output goes to molecule/.state/demo-*.log.
cmd_demo() {
    [[ $EUID -eq 0 ]] || ctpy_die "run as root (rootful podman, debootstrap)"
    local t0=$SECONDS t logs="$CTPY_STATE" i
    mkdir -p "$logs"
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

    step "1/6 host packages, Python venv, node image, Ansible collection"
    t=$SECONDS
    ctpy_host_packages
    if ! [[ -x $VENV/bin/ansible-playbook ]] || ! "$VENV/bin/python" -c 'import testinfra' 2>/dev/null; then
        dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'install ok installed' ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        ctpy_log "creating $VENV (log: $logs/demo-venv.log)"
        if command -v make >/dev/null; then
            make -C "$REPO" venv >"$logs/demo-venv.log" 2>&1 || ctpy_die "make venv failed: $logs/demo-venv.log"
        else
            { python3 -m venv "$VENV" &&
                "$VENV/bin/pip" install -q -e "$REPO[test,ansible]" --config-settings editable_mode=compat; } \
                >"$logs/demo-venv.log" 2>&1 || ctpy_die "venv failed: $logs/demo-venv.log"
        fi
    fi
    "$CTPY_MOLECULE/image/build.sh" >"$logs/demo-image.log" 2>&1 || ctpy_die "image build failed: $logs/demo-image.log"
    "$CTPY_MOLECULE/collections.sh" >>"$logs/demo-image.log" 2>&1 || ctpy_die "collections failed: $logs/demo-image.log"
    echo "  image $(podman image inspect --format '{{index .RepoTags 0}}' "$CTPY_IMAGE_REPO:latest")," \
        "venv $VENV: ready in $((SECONDS - t)) s"

    step "2/6 four containers: client -- fw1/fw2 -- server on internal podman networks (no route out)"
    t=$SECONDS
    playbook "$SCENARIO/create.yml" >"$logs/demo-create.log" 2>&1 || ctpy_die "create failed: $logs/demo-create.log"
    podman ps --filter "name=^$CTPY_PREFIX" --format '  {{.Names}}  {{.Status}}'
    echo "  up in $((SECONDS - t)) s"

    step "3/6 rollout: playbooks/cluster.yml (two waves) + the lab's strict forward ruleset"
    t=$SECONDS
    playbook "$SCENARIO/converge.yml" >"$logs/demo-converge.log" 2>&1 ||
        { tail -30 "$logs/demo-converge.log"; ctpy_die "converge failed: $logs/demo-converge.log"; }
    sed -n '/^PLAY RECAP/,/^$/p' "$logs/demo-converge.log" | grep -v '^$' | sed 's/^/  /'
    echo "  rolled out in $((SECONDS - t)) s (log: $logs/demo-converge.log)"

    step "4/6 each node's role"
    for i in $(seq 1 60); do
        [[ $(vip_holders) == 1 ]] && break
        sleep 0.5
    done
    node_roles

    step "5/6 ${CTPY_DEMO_TCP:-100} TCP connections + 10 UDP flows + 20 source-NATed connections + an FTP session client -> server; podman kill of the master; failback"
    "$VENV/bin/python" "$REPO/tests/molecule/failover.py" run --passes kill --tcp "${CTPY_DEMO_TCP:-100}" \
        --udp 10 --short --out "$CTPY_STATE/failover-demo.json" 2>"$logs/demo-failover.log" ||
        { cat "$logs/demo-failover.log"; ctpy_die "the failover run failed (log: $logs/demo-failover.log)"; }

    step "6/6 after the failback"
    node_roles
    echo
    echo "demo done in $((SECONDS - t0)) s. Next: scripts/lab.sh status | failover | verify;" \
        "podman exec -it ${CTPY_PREFIX}fw1 bash; clean up: scripts/lab.sh down"
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
verify) shift; cmd_verify "$@" ;;
failover) shift; cmd_failover "$@" ;;
demo) cmd_demo ;;
soak) shift; cmd_soak "$@" ;;
*)
    echo "usage: $0 {up [ansible-playbook args]|down|status|failover [failover.py args]|verify [pytest args]|demo|soak [soak.py args]}" >&2
    exit 2
    ;;
esac
