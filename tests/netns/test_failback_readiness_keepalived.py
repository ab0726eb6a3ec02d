"""Failback at scale: a restarted, higher-priority node with a slow peer does not preempt early (issue #13).

Two "firewall" namespaces, each with our conntrackd (FTFW over UDP on a sync link, ``DisableExternalCache
on``, a readiness file) and keepalived 2.x with the config the roles render (templates/keepalived.conf.j2:
``track_file`` on the readiness file, weight 1, ``init_file -100``; notify hooks through the rendered
wrapper and ``conntrackd-notify``)::

    ctpy-inj1-xxxxxx  ctpyinjsv1 10.232.200.1/24 ==== ctpyinjsv2 .2  ctpy-inj2-xxxxxx   VRRP, VIP .254
                      ctpyinjsy1 10.232.100.1/24 ==== ctpyinjsy2 .2                     sync (UDP 3782)

Both start and get ready, fw2 (priority 150) becomes MASTER; fw2 goes down and fw1 (priority 100) takes
over; N flows (default 30,000) are created in fw1's kernel.  Then fw2 starts again on an empty table, as
after a reboot, while fw1's conntrackd is stopped (SIGSTOP) for a few seconds: a peer slow to answer the
resync.  fw2 must stay BACKUP (150 - 100 < 100) until its readiness file says 0, by which time its
kernel table must hold all of fw1's flows (direct injection); then it must take the VIP.  Only processes
started here are signalled (by pid); the namespaces are deleted by name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conntrack_tools import render
from tests.conftest import Netns, require_root
from tests.netns.daemon_proc import wait_for
from tests.netns.keepalived_pair import KEEPALIVED, link_pair, notify_launcher, start_keepalived, stop, stop_keepalived
from tests.netns.test_sync_resync import burst_keys

REPO = Path(__file__).resolve().parents[2]
C_CONNTRACK = "/usr/sbin/conntrack"
OUR_DAEMON = [sys.executable, "-m", "conntrack_tools.daemon.main"]
VIP = "10.232.200.254"
N = int(os.environ.get("CTPY_FAILBACK_N", "30000"))
SLOW_PEER_S = 4.0  # n1's conntrackd does not answer for this long after n2 starts
_ORIG = re.compile(r"src=\S+ dst=\S+ sport=\d+ dport=\d+")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(KEEPALIVED), reason=f"needs {KEEPALIVED}"),
]


class Fw:
    """One firewall: our conntrackd and keepalived in namespace ``ns``."""

    def __init__(self, tmp: Path, idx: int, ns: Netns, prio: int) -> None:
        self.idx, self.ns = idx, ns
        self.dir = tmp / f"fw{idx}"
        self.dir.mkdir()
        self.ready = self.dir / "ready"
        self.sock, self.lock, self.log = self.dir / "ctl", self.dir / "lock", self.dir / "conntrackd.log"
        self.conf = self.dir / "conntrackd.conf"
        peer = 2 if idx == 1 else 1
        self.conf.write_text(f"""Sync {{
	Mode FTFW {{
		ResendQueueSize 131072
		DisableExternalCache on
		PurgeTimeout 5
	}}
	UDP {{
		IPv4_address 10.232.100.{idx}
		IPv4_Destination_Address 10.232.100.{peer}
		Port 3782
		Interface ctpyinjsy{idx}
		SndSocketBuffer 4194304
		RcvSocketBuffer 4194304
		Checksum on
	}}
}}
General {{
	Systemd off
	HashSize 65536
	HashLimit 262144
	LogFile {self.log}
	Syslog off
	LockFile {self.lock}
	UNIX {{
		Path {self.sock}
	}}
	NetlinkOverrunResync 1
	NetlinkBufferSize 4194304
	NetlinkBufferSizeMaxGrowth 67108864
	Readiness {{
		File {self.ready}
		Weight -100
	}}
	Filter From Userspace {{
		Address Ignore {{
			IPv4_address 127.0.0.1
			IPv4_address 10.232.100.0/24
			IPv4_address 10.232.200.0/24
		}}
	}}
}}
""")
        self.nout = self.dir / "notify.err"
        self.wrapper = self.dir / "conntrackd-notify.sh"
        self.wrapper.write_text(render.render("conntrackd-notify.sh.j2", {
            "keepalived_notify_command": notify_launcher(self.dir, self.nout),
            "keepalived_notify_args": ["-C", str(self.conf), "--no-syslog", "--timeout", "10"],
        }))
        self.wrapper.chmod(0o755)
        self.kconf = self.dir / "keepalived.conf"
        self.kconf.write_text(render.render("keepalived.conf.j2", {
            "keepalived_node": f"fw{idx}", "keepalived_router_id": f"ctpyinj-fw{idx}",
            "keepalived_pair_addresses": {}, "keepalived_vrrp_transport": "multicast",
            "keepalived_vrrp_version": 2, "keepalived_priority": prio, "keepalived_advert_int": 1,
            "keepalived_auth_type": "PASS", "keepalived_auth_pass": "ctpyinj",
            "keepalived_script_user": "root", "keepalived_enable_script_security": False,
            "keepalived_garp_master_delay": 1, "keepalived_global_defs_extra": [], "keepalived_vrrp_scripts": [],
            "keepalived_sync_group": "G_CTPYINJ", "keepalived_notify_wrapper": str(self.wrapper),
            "keepalived_readiness_file": str(self.ready), "keepalived_readiness_weight": -100,
            "keepalived_maintenance_file": str(self.dir / "maintenance"),  # the roles' drain file, in service
            "keepalived_instances": [{"name": "VI_1", "interface": f"ctpyinjsv{idx}", "virtual_router_id": 63,
                                      "virtual_ipaddress": [{"address": f"{VIP}/24"}]}],
        }))
        self.daemon: subprocess.Popen | None = None
        self.keepalived: subprocess.Popen | None = None
        self.kout = self.dir / "keepalived.out"

    def start_daemon(self) -> None:
        with open(self.dir / "daemon.out", "a") as out:
            self.daemon = subprocess.Popen([*self.ns.prefix(), *OUR_DAEMON, "-C", str(self.conf)],
                                           stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(lambda: self.sock.exists() or self.daemon.poll() is not None, 15, f"fw{self.idx} control socket")
        assert self.daemon.poll() is None, (self.dir / "daemon.out").read_text()

    def start_keepalived(self) -> None:
        self.keepalived = start_keepalived(self.ns.prefix(), self.kconf, self.dir, self.kout)

    def holds_vip(self) -> bool:
        return VIP in self.ns.run(["ip", "-4", "-o", "addr", "show", "dev", f"ctpyinjsv{self.idx}"]).stdout

    def readiness(self) -> str | None:
        try:
            return self.ready.read_text().strip()
        except OSError:
            return None

    def kernel_count(self) -> int:
        r = self.ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        return int(r.stdout) if r.returncode == 0 else -1

    def kernel_flows(self) -> set[str]:
        r = self.ns.run([C_CONNTRACK, "-L", "-p", "udp"], timeout=60)
        return {m.group(0) for m in map(_ORIG.search, r.stdout.splitlines()) if m}

    def primary_launches(self) -> list[float]:
        text = self.nout.read_text(errors="replace") if self.nout.exists() else ""
        return [float(t) for t in re.findall(r"^launch primary (\d+\.\d+)$", text, re.M)]

    def text(self) -> str:
        out = []
        for name in ("keepalived.out", "notify.err", "conntrackd.log", "daemon.out"):
            p = self.dir / name
            out.append(f"--- fw{self.idx} {name}:\n" + (p.read_text(errors="replace")[-3000:] if p.exists() else ""))
        return "\n".join(out)

    def cleanup(self) -> None:
        stop_keepalived(self.keepalived, self.dir)
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGCONT)  # in case the test stopped it
        stop(self.daemon, timeout=15)


@pytest.fixture
def firewalls(tmp_path):
    require_root()
    made: list = []
    try:
        a, b = Netns("inj1"), Netns("inj2")
        made += [a, b]
        link_pair(a, b, "ctpyinjsv", "10.232.200")
        link_pair(a, b, "ctpyinjsy", "10.232.100")
        fw1, fw2 = Fw(tmp_path, 1, a, 100), Fw(tmp_path, 2, b, 150)
        made[:0] = [fw1, fw2]
        yield fw1, fw2
    finally:
        for obj in made:
            if isinstance(obj, Fw):
                obj.cleanup()
        for obj in made:
            if isinstance(obj, Netns):
                obj.close()


def test_restarted_node_preempts_only_with_its_state_in(firewalls) -> None:
    fw1, fw2 = firewalls

    def show() -> str:
        return fw1.text() + "\n" + fw2.text()

    # both up and ready, fw2 MASTER; then fw2 goes down and fw1 takes over
    for fw in (fw1, fw2):
        fw.start_daemon()
    for fw in (fw1, fw2):
        fw.start_keepalived()
    wait_for(lambda: fw1.readiness() == fw2.readiness() == "0", 20, "both ready", show)
    wait_for(fw2.holds_vip, 20, "fw2 MASTER", show)
    stop(fw2.keepalived)
    stop(fw2.daemon, timeout=15)
    wait_for(fw1.holds_vip, 20, "fw1 MASTER", show)
    r = fw1.ns.run([sys.executable, "bench/populate.py", str(N), "udp"], cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    want = burst_keys(N)
    assert fw2.ns.run([C_CONNTRACK, "-F"]).returncode == 0  # fw2 comes back as after a reboot: empty table
    fw2.ready.unlink()

    # fw2 comes back (higher priority, preempting) while fw1's daemon is slow to answer its resync
    fw1.daemon.send_signal(signal.SIGSTOP)
    wait_for(lambda: "T (stopped)" in Path(f"/proc/{fw1.daemon.pid}/status").read_text(), 5, "fw1's daemon stopped")
    t_start = time.monotonic()
    fw2.start_daemon()
    fw2.start_keepalived()
    resumed = False
    t_ready = t_vip = None
    at_ready = at_vip = -1
    while time.monotonic() - t_start < 45:
        now = time.monotonic()
        if not resumed and now - t_start >= SLOW_PEER_S:
            fw1.daemon.send_signal(signal.SIGCONT)
            resumed = True
        if t_ready is None and fw2.readiness() == "0":
            t_ready, at_ready = now, fw2.kernel_count()
        if fw2.holds_vip():
            t_vip, at_vip = time.monotonic(), fw2.kernel_count()
            break
        time.sleep(0.02)
    if not resumed:
        fw1.daemon.send_signal(signal.SIGCONT)
    assert t_vip is not None, "fw2 never became MASTER\n" + show()
    launches = wait_for(lambda: [t for t in fw2.primary_launches() if t > t_start], 10, "fw2 notify_master",
                        show)  # keepalived adds the VIP first, then runs the hook
    print(f"\nfailback of {N}: fw2 ready {t_ready - t_start if t_ready else float('nan'):.1f} s after its start "
          f"(kernel entries then {at_ready}), VIP on fw2 {t_vip - t_start:.1f} s (kernel {at_vip}); "
          f"notify_master at {[round(t - t_start, 2) for t in launches]}")
    assert t_ready is not None and t_ready - t_start >= SLOW_PEER_S, "ready before the slow peer answered\n" + show()
    assert launches and min(launches) > t_ready, "MASTER before the readiness file said 0\n" + show()
    assert at_ready >= N and at_vip >= N
    assert want <= fw2.kernel_flows(), "fw2's kernel lacks some of fw1's flows"
    wait_for(lambda: not fw1.holds_vip(), 10, "fw1 gave the VIP up", show)


def test_node_whose_peer_is_dead_becomes_master_at_once(firewalls) -> None:
    """The readiness weight never holds back a node that is alone: fw2 starts with no peer at all (fw1's
    daemon and keepalived never run), its readiness file keeps saying "not ready" (no one answers its resync
    request), and it still takes the VIP within keepalived's master-down interval (3 adverts of 1 s + skew)."""
    _fw1, fw2 = firewalls
    t_start = time.monotonic()
    fw2.start_daemon()
    fw2.start_keepalived()
    wait_for(fw2.holds_vip, 10, "fw2 MASTER while alone", lambda: fw2.text())
    took = time.monotonic() - t_start
    assert fw2.readiness() == "-100", "the lone node is not ready (no peer answered), yet it is MASTER\n" + fw2.text()
    print(f"\nalone: fw2 MASTER {took:.1f} s after its start, readiness still {fw2.readiness()}")
    assert took < 8.0
