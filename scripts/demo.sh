#!/bin/bash
# The README's main job until the container lab lands: a short real session.
# Two network namespaces joined by a veth pair, a stateful nft rule so the kernel tracks
# traffic, real TCP/UDP/ICMP flows, then our `conntrack` lists, filters, follows and
# deletes them. Everything is named ctpy-demo-*, and removed at the end (or by `demo.sh clean`).
set -euo pipefail

CLI=${CONNTRACK:-conntrack}
DAEMON=${CONNTRACKD:-conntrackd}
A=ctpy-demo-a
B=ctpy-demo-b
HERE=$(cd "$(dirname "$0")/.." && pwd)

clean() {
    ip netns pids "$A" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns pids "$B" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns delete "$A" 2>/dev/null || true
    ip netns delete "$B" 2>/dev/null || true
}

if [[ ${1:-} == clean ]]; then
    clean
    exit 0
fi
[[ $(id -u) == 0 ]] || { echo "demo needs root (network namespaces)" >&2; exit 1; }
trap clean EXIT
clean

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "two namespaces, a veth link, a stateful firewall in $B"
ip netns add "$A"
ip netns add "$B"
ip link add ctpy-demo0 netns "$A" type veth peer name ctpy-demo1 netns "$B"
ip -n "$A" addr add 192.0.2.1/24 dev ctpy-demo0
ip -n "$A" addr add 2001:db8:d::1/64 dev ctpy-demo0 nodad
ip -n "$B" addr add 192.0.2.2/24 dev ctpy-demo1
ip -n "$B" addr add 2001:db8:d::2/64 dev ctpy-demo1 nodad
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set ctpy-demo0 up
ip -n "$B" link set ctpy-demo1 up
ip netns exec "$B" nft -f - <<'EOF'
table inet demo {
    chain input {
        type filter hook input priority 0; policy accept;
        ct state established,related accept
        ct state new counter accept
    }
}
EOF

step "real traffic from $A to $B: TCP (kept open), UDP, ICMP, IPv6"
ip netns exec "$B" python3 - <<'EOF' &
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080)); srv.listen(16)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 5353))
def serve_udp():
    while True:
        data, peer = udp.recvfrom(100); udp.sendto(data, peer)
threading.Thread(target=serve_udp, daemon=True).start()
conns = []
while True:
    c, _ = srv.accept(); conns.append(c)
EOF
sleep 0.5
ip netns exec "$A" python3 - <<'EOF' &
import socket, time
keep = [socket.create_connection(("192.0.2.2", 8080)) for _ in range(3)]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in (40001, 40002):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    s.sendto(b"hi", ("192.0.2.2", 5353)); s.settimeout(2); s.recv(10)
time.sleep(120)
EOF
ip netns exec "$A" ping -c1 -W1 192.0.2.2 >/dev/null
ip netns exec "$A" ping -6 -c1 -W1 2001:db8:d::2 >/dev/null || true
sleep 0.5

step "conntrack -L (our binary: $(command -v "$CLI"))"
ip netns exec "$B" "$CLI" -L
step "conntrack -L -p tcp --dport 8080 -o extended,id"
ip netns exec "$B" "$CLI" -L -p tcp --dport 8080 -o extended,id
step "conntrack -L -o json (beyond C: one object per line)"
{ ip netns exec "$B" "$CLI" -L -o json | head -2; } || true
step "conntrack -L -o save | conntrack -R - into zone 7 (the man page's example)"
ip netns exec "$B" "$CLI" -L -p udp -o save | sed 's/^-A /-I -w 7 /' | ip netns exec "$B" "$CLI" -R -
ip netns exec "$B" "$CLI" -L -w 7
step "conntrack -E while flows are created and deleted"
ip netns exec "$B" timeout -s INT 2 "$CLI" -E -o timestamp &
sleep 0.5
ip netns exec "$B" "$CLI" -I -s 198.51.100.1 -d 198.51.100.2 -p udp --sport 1 --dport 2 -t 30
ip netns exec "$B" "$CLI" -U -s 198.51.100.1 -p udp -m 42
ip netns exec "$B" "$CLI" -D -s 198.51.100.1
wait %4 2>/dev/null || sleep 2
step "conntrack -C and -S"
ip netns exec "$B" "$CLI" -C
{ ip netns exec "$B" "$CLI" -S | head -2; } || true
step "conntrackd --config-test on the upstream FTFW example (beyond C)"
cfg=$(ls "$HERE"/../shared/reference/upstream-examples/doc/sync/ftfw/conntrackd.conf 2>/dev/null || true)
if [[ -n $cfg ]]; then "$DAEMON" --config-test -C "$cfg" || true; fi
step "done: namespaces removed"
