#!/usr/bin/env python3
"""Failover driver for the container lab (host side; runs `podman` and `podman exec`).

    failover.py run   [--passes kill,stop] [--tcp 100] [--udp 10] [--out FILE] [-i INVENTORY ...]
    failover.py report FILE [--short]

One *pass*: echo server on `server`; `client` opens --tcp long-lived TCP connections (a thread
each, a line per 100 ms) and --udp UDP flows through the pair (lab_traffic.py flows); once the
backup's external cache holds every TCP flow, the master is taken down:

  kill   `podman kill` of the master's container (SIGKILL to the whole container, no VRRP goodbye)
  stop   `systemctl stop keepalived` on the master (priority-0 advert, conntrackd keeps running)
  nosync the control: like stop, but the backup's external cache is flushed first
         (`conntrackd -f external`), so nothing is committed and no connection may survive
         (20 TCP + 2 UDP flows): proof that the ruleset is strict and the survivors owe it to sync
  drain  `ansible-playbook ctpy.conntrack_tools.maintenance -e maintenance_action=drain` on the master
         (the installed collection's playbook: pre-check, drain file, wait for the peer), back with
         `maintenance_action=undrain` (the first node preempts again)
  upgrade `ansible-playbook ctpy.conntrack_tools.upgrade` with a second version of our wheel built here
         (galaxy.yml's version + 1 in its last field, from a copy of the working tree): the backup first,
         then the drained switchover (event 1), the former master upgraded and undrained (event 2: it
         preempts); the playbook runs in the background while both VIP moves are measured
  refuse bad input: conntrackd stopped on the backup, then a drain: the pre-check must stop it, nothing
         may change

then the driver waits for the backup to hold every VIP (takeover time), reads the new master's
journal for the notify hook (`conntrackd-notify: primary: ...`) and conntrackd's commit lines
(`Committed N new entries`, `commit has taken S seconds`; C and Python daemons log the same),
counts the client's flows in the new master's kernel table (`conntrack -L`), waits until every
connection echoes again, and *fails back* (`podman start` / `systemctl start keepalived`: the first
node preempts with its higher priority) and measures the same again.  The per-connection gap of an
event is the silence between the last echo before it and the first echo after it.

The result (JSON, --out) is what tests/molecule/test_failover.py asserts on and what
`scripts/lab.sh demo` prints.  Standard library only, besides `ansible-inventory` for the topology.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRAFFIC = HERE / "lab_traffic.py"
ECHO_PORT = 7777
NAT_PORT = 7778  # the site ruleset source-NATs client -> server:7778 to the inside VIP (converge.yml)
FTP_PORT = 2121  # the site ruleset assigns the FTP helper here; data connections pass only as RELATED
FTP_OUT = "/run/ctpy-ftp.json"
FLOWS_OUT = "/run/ctpy-flows.json"
FLOWS_STOP = "/run/ctpy-flows.stop"
DEFAULT_OUT = ROOT / "molecule" / ".state" / "failover.json"
# A connection must echo again within this many seconds after the VIPs moved (TCP's exponential
# retransmission backoff: the first retransmit after the commit may come ~2x the takeover later).
HANG_AFTER_TAKEOVER = 20.0
# The control pass (nosync) watches this long after the takeover for a connection that recovers
# although the new master had nothing to commit (a synced connection is back within ~7 s).
CONTROL_WINDOW = 12.0
DRAIN_FILE = "/etc/keepalived/ctpy-maintenance"  # the roles' default ha_firewall_maintenance_file
PASSES = ("kill", "stop", "nosync", "drain", "upgrade", "migrate", "refuse")
PASS_FLOWS = {"nosync": (20, 2, 0)}  # the control needs no 100 connections
AFTER_TAKEOVER = 1.0  # seconds after the VIP move in which a silence that begins still belongs to the event


_CONSOLE_PREFIX = re.compile(r"^\[[^]]*\] \(pid=\d+\) \[\w+\] ")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- topology


def inventories_from_env() -> list[str]:
    env = os.environ.get("CTPY_LAB_INVENTORY")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [str(ROOT / "molecule" / "default" / "inventory")]


def load_lab(inventories: list[str]) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("ansible-inventory")
    cmd = [str(exe) if exe.exists() else (shutil.which("ansible-inventory") or "ansible-inventory")]
    for inv in inventories:
        cmd += ["-i", inv]
    data = json.loads(subprocess.run(cmd + ["--list"], check=True, capture_output=True, text=True).stdout)
    hv = data["_meta"]["hostvars"]
    fws = sorted(data["pair_lab"]["hosts"])
    fw = hv[fws[0]]
    return {
        "prefix": fw["lab_prefix"],
        "nodes": fw["lab_nodes"],
        "firewalls": fws,
        "implementation": {n: hv[n].get("conntrackd_implementation", "python") for n in fws},
        # DisableExternalCache (the role's default): the synced state is in the backup's kernel table
        "inject": {n: bool(hv[n].get("conntrackd_disable_external_cache", True))
                   and hv[n].get("conntrackd_mode", "FTFW") != "ALARM" for n in fws},
        "vips": [(i["interface"], i["virtual_ipaddress"][0]["address"].split("/")[0])
                 for i in fw["keepalived_instances"]],
        "client_ip": fw["lab_nodes"]["client"]["addresses"]["outside"],
        "vip_inside": fw["lab_vip_inside"],
        "server_ip": fw["lab_nodes"]["server"]["addresses"]["inside"],
    }


# --------------------------------------------------------------------------- podman


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: rc={res.returncode}: {res.stderr.strip()}")
    return res


def sh(container: str, script: str, check: bool = True, timeout: float = 60) -> str:
    return podman("exec", container, "sh", "-c", script, check=check, timeout=timeout).stdout


def running(container: str) -> bool:
    res = podman("inspect", "--format", "{{.State.Running}}", container, check=False)
    return res.returncode == 0 and res.stdout.strip() == "true"


def wait(what: str, probe, timeout: float, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = probe()
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Lab:
    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.p = info["prefix"]

    def c(self, node: str) -> str:
        return f"{self.p}{node}"

    def holds_vips(self, node: str) -> bool:
        if not running(self.c(node)):
            return False
        out = sh(self.c(node), "ip -4 -o addr show", check=False)
        return all(f" {vip}/" in out for _, vip in self.info["vips"])

    def roles(self) -> tuple[str, str]:
        """(master, backup) by who holds every VIP; raises ValueError if not exactly one."""
        holders = [n for n in self.info["firewalls"] if self.holds_vips(n)]
        if len(holders) != 1:
            raise ValueError(f"VIP holders: {holders}")
        master = holders[0]
        return master, next(n for n in self.info["firewalls"] if n != master)

    def vip_watch(self, node: str) -> subprocess.Popen[str]:
        """Start a loop inside `node` that prints the moment (wall clock) it holds every VIP.  Started
        before the event, so the `podman exec` round trips of the event do not count."""
        cond = " && ".join(f"ip -4 -o addr show dev {ifn} | grep -q ' {vip}/'" for ifn, vip in self.info["vips"])
        script = f"echo ready; while ! ({cond}); do sleep 0.01; done; date +%s.%N"
        proc = subprocess.Popen(["podman", "exec", self.c(node), "sh", "-c", script],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"cannot watch the VIPs in {node}: {proc.communicate()[1].strip()}")
        return proc

    @staticmethod
    def vip_time(proc: subprocess.Popen[str], timeout: float) -> float:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f"the VIPs did not move within {timeout:.0f} s") from None
        return float(out.strip())

    def count_flows(self, node: str, where: str) -> dict[str, int]:
        """Client->server flows (TCP: established ones) in conntrackd's internal/external cache or the
        kernel table; "nat": the established ones to NAT_PORT, source-NATed to the inside VIP."""
        ci, si = self.info["client_ip"], self.info["server_ip"]
        cmd = {"internal": "conntrackd -i", "external": "conntrackd -e",
               "kernel": "conntrack -L 2>/dev/null"}[where]
        out = sh(self.c(node), f"{cmd} || true", check=False)
        tcp = udp = nat = 0
        for line in out.splitlines():
            if f"src={ci} dst={si}" not in line:
                continue
            if f"dport={NAT_PORT}" in line:
                nat += "ESTABLISHED" in line and f"dst={self.info['vip_inside']} " in line
                continue
            if f"dport={ECHO_PORT}" not in line:
                continue
            if line.lstrip().startswith("tcp") or " tcp " in line:
                tcp += "ESTABLISHED" in line  # closed connections of earlier passes linger in TIME_WAIT
            elif line.lstrip().startswith("udp") or " udp " in line:
                udp += 1
        return {"tcp": tcp, "udp": udp, "nat": nat}

    def journal(self, node: str, since: float) -> list[dict[str, Any]]:
        out = sh(self.c(node), f"journalctl -o json --no-pager --since @{since:.3f} "
                               "-t conntrackd -t conntrack-tools -t conntrackd-notify -t Keepalived_vrrp",
                 check=False)
        recs = []
        for line in out.splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            ident = j.get("SYSLOG_IDENTIFIER", "")
            # The C daemon's syslog ident is its package name; both daemons also print every line with a
            # "[date] (pid=N) [level] " prefix on stdout in console mode (the journal keeps both copies).
            recs.append({"t": int(j.get("__REALTIME_TIMESTAMP", 0)) / 1e6,
                         "id": "conntrackd" if ident == "conntrack-tools" else ident,
                         "msg": _CONSOLE_PREFIX.sub("", str(j.get("MESSAGE", "")))})
        return recs


def commit_info(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The notify hook's summary and conntrackd's commit lines from journal records."""
    info: dict[str, Any] = {"notify": None, "notify_t": None, "committed": None, "commit_failed": 0,
                            "commit_s": None, "commit_t": None, "ready_t": None, "waiting_t": None}
    for r in recs:
        m = r["msg"]
        if r["id"] == "conntrackd-notify" and "primary:" in m and "total" in m and info["notify"] is None:
            info["notify"], info["notify_t"] = m, r["t"]
        elif r["id"] == "conntrackd" and m.startswith("Committed ") and info["committed"] is None:
            info["committed"] = int(m.split()[1])
            info["commit_t"] = r["t"]
        elif r["id"] == "conntrackd" and m.endswith("entries can't be committed") and m.split()[0].isdigit():
            info["commit_failed"] = int(m.split()[0])
        elif r["id"] == "conntrackd" and m.startswith("commit has taken") and info["commit_s"] is None:
            info["commit_s"] = float(m.split()[3])
        elif r["id"] == "conntrackd" and m.startswith("state complete: readiness file") and info["ready_t"] is None:
            info["ready_t"] = r["t"]
        elif r["id"] == "conntrackd" and m.startswith("waiting for the resync asked for") and info["waiting_t"] is None:
            info["waiting_t"] = r["t"]  # a ready backup's -n (keepalived restarted, conntrackd did not)
    return info


# --------------------------------------------------------------------------- traffic


def ensure_echo_server(lab: Lab) -> None:
    for node in ("client", "server"):
        podman("cp", str(TRAFFIC), f"{lab.c(node)}:/usr/local/bin/lab_traffic.py")
    srv = lab.c("server")
    for port in (ECHO_PORT, NAT_PORT):
        if f":{port} " not in sh(srv, "ss -Hltn"):
            podman("exec", "-d", srv, "sh", "-c",
                   f"echo $$ >/run/ctpy-echo-{port}.pid; exec python3 /usr/local/bin/lab_traffic.py serve {port}")
            wait(f"the echo server on {port}", lambda port=port: f":{port} " in sh(srv, "ss -Hltn"), 15)
    if f":{FTP_PORT} " not in sh(srv, "ss -Hltn"):
        podman("exec", "-d", srv, "sh", "-c",
               f"echo $$ >/run/ctpy-ftp.pid; exec python3 /usr/local/bin/lab_traffic.py ftpserve {FTP_PORT}")
        wait("the FTP server", lambda: f":{FTP_PORT} " in sh(srv, "ss -Hltn"), 15)


def start_flows(lab: Lab, tcp: int, udp: int, nat: int) -> None:
    cl = lab.c("client")
    sh(cl, f"rm -f {FLOWS_OUT} {FLOWS_STOP}")
    podman("exec", "-d", cl, "python3", "/usr/local/bin/lab_traffic.py", "flows", lab.info["server_ip"],
           str(ECHO_PORT), "--tcp", str(tcp), "--udp", str(udp), "--nat-tcp", str(nat), "--nat-port", str(NAT_PORT),
           "--out", FLOWS_OUT, "--stop-file", FLOWS_STOP, "--hang-timeout", "90", "--duration", "900")


def start_ftp(lab: Lab) -> None:
    cl = lab.c("client")
    sh(cl, f"rm -f {FTP_OUT}")
    podman("exec", "-d", cl, "python3", "/usr/local/bin/lab_traffic.py", "ftp", lab.info["server_ip"], str(FTP_PORT),
           "--out", FTP_OUT, "--stop-file", FLOWS_STOP)


def ftp_snapshot(lab: Lab) -> dict[str, Any]:
    return json.loads(sh(lab.c("client"), f"cat {FTP_OUT}"))


def ftp_events(ftp: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """Per event: failed transfers that started after the VIPs moved (their data connection needed the
    helper's expectation on the new master), successful ones after it, the longest pause between two
    successful transfers around the event."""
    done = [t for t in ftp["transfers"] if t[2] is None]
    for ev in events:
        t0, t1 = ev["t_event"], ev["t_takeover"]
        ev["ftp_failed_after"] = [t for t in ftp["transfers"] if t[2] is not None and t[0] >= t1]
        ev["ftp_ok_after"] = sum(1 for t in done if t[0] >= t1)
        ends = [t[1] for t in done]
        gaps = [b - a for a, b in zip(ends, ends[1:], strict=False) if b >= t0 and a <= t1]
        ev["ftp_gap_s"] = round(max(gaps), 3) if gaps else None


def nat_sources(lab: Lab) -> list[str]:
    """The peers the server sees on NAT_PORT: the inside VIP when the pair source-NATs."""
    out = sh(lab.c("server"), f"ss -Htn state established '( sport = :{NAT_PORT} )'", check=False)
    return sorted({line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()})


def snapshot(lab: Lab) -> dict[str, Any]:
    return json.loads(sh(lab.c("client"), f"cat {FLOWS_OUT}"))


def stop_flows(lab: Lab) -> dict[str, Any]:
    sh(lab.c("client"), f"touch {FLOWS_STOP}")
    return wait("the final flow report", lambda: (s := snapshot(lab))["final"] and s, 20, 0.3)


def recovered(lab: Lab, after: float) -> tuple[int, int, int]:
    """(TCP flows that echoed after `after`, errored TCP flows, all TCP flows) from the live snapshot
    (source-NATed connections included)."""
    s = snapshot(lab)
    tcp = [f for f in s["flows"] if f["kind"] in ("tcp", "nat")]
    ok = sum(1 for f in tcp if f["last_echo"] and f["last_echo"] > after and not f["error"])
    bad = sum(1 for f in tcp if f["error"])
    return ok, bad, len(tcp)


def wait_recovered(lab: Lab, after: float, timeout: float, quiet: bool = False) -> tuple[float, int]:
    """Wait until every TCP flow echoed after `after` (or failed); returns (when, how many echoed)."""
    deadline = time.monotonic() + timeout
    while True:
        ok, bad, n = recovered(lab, after)
        if ok + bad >= n:
            return time.time(), ok
        if time.monotonic() > deadline:
            if not quiet:
                log(f"  not every connection recovered within {timeout:.0f} s: {ok} ok, {bad} failed of {n}")
            return time.time(), ok
        time.sleep(0.5)


def invalid_drops_all(lab: Lab) -> dict[str, int]:
    """The `ct state invalid` counter of every running firewall (a node that was down starts at 0)."""
    return {n: (invalid_drops(lab, n) or 0) if running(lab.c(n)) else 0 for n in lab.info["firewalls"]}


def drops_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per node: packets dropped as invalid between two readings (a counter that went down: the node
    rebooted, so all of its count is new)."""
    return {n: after[n] - before.get(n, 0) if after[n] >= before.get(n, 0) else after[n] for n in after}


def replaced_all(lab: Lab) -> dict[str, int]:
    """Per running firewall with our daemon and direct injection: live kernel entries the injector
    deleted and re-created so far (``external_inject.replaced``: a window in which the flow's packets
    find no entry and are dropped as invalid); 0 for a C daemon or a node that is down."""
    out = {}
    for n in lab.info["firewalls"]:
        j: dict[str, Any] = {}
        if running(lab.c(n)) and lab.info["implementation"][n] == "python":
            try:
                j = json.loads(sh(lab.c(n), "conntrackd -s -o json 2>/dev/null || true", check=False) or "{}")
            except ValueError:
                j = {}
        out[n] = int(j.get("external_inject", {}).get("replaced", 0))
    return out


def invalid_packets(lab: Lab) -> dict[str, list[str]]:
    """Per running firewall: the TCP flows of which its site ruleset dropped a packet as invalid since the last
    call ("saddr . daddr . sport . dport", with " syn-ack" where the packet was a SYN-ACK; the lab's sets
    ctpy_invalid_tcp and ctpy_invalid_synack, flushed after reading), so that a failed `0 invalid` check says
    which flow and what kind of packet."""
    def elements(text: str) -> list[str]:
        m = re.search(r"elements = \{(.*?)\}", text, re.S)
        return [" ".join(e.split()).split(" expires")[0] for e in m.group(1).split(",")] if m else []

    out: dict[str, list[str]] = {}
    for n in lab.info["firewalls"]:
        if not running(lab.c(n)):
            out[n] = []
            continue
        sets = {}
        for name in ("ctpy_invalid_tcp", "ctpy_invalid_synack"):
            sets[name] = elements(sh(lab.c(n), f"nft list set inet ctpy_lab {name} 2>/dev/null; "
                                               f"nft flush set inet ctpy_lab {name} 2>/dev/null || true", check=False))
        synack = set(sets["ctpy_invalid_synack"])
        out[n] = [e for e in sets["ctpy_invalid_tcp"] if e not in synack] + [f"{e} syn-ack" for e in sorted(synack)]
    return out


def invalid_drops(lab: Lab, node: str) -> int | None:
    """Packets dropped by the site ruleset's `ct state invalid` rule (no conntrack entry for them)."""
    out = sh(lab.c(node), "nft list chain inet ctpy_lab forward", check=False)
    for line in out.splitlines():
        if "ct state invalid" in line and "packets" in line:
            return int(line.split("packets")[1].split()[0])
    return None


# --------------------------------------------------------------------------- analysis


def event_gaps(flows: list[dict[str, Any]], t0: float, t1: float) -> list[float]:
    """Per flow: the longest silence that contains a moment of [t0, t1] (the interval when the
    VIPs were moving); flows without such a silence get 0 (they never noticed)."""
    out = []
    for f in flows:
        g = [b - a for a, b in f["gaps"] if b >= t0 and a <= t1]
        out.append(round(max(g), 3) if g else 0.0)
    return out


def summarize(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"max": None, "median": None, "p95": None, "min": None}
    v = sorted(values)
    return {"max": v[-1], "median": round(statistics.median(v), 3), "p95": v[int(0.95 * (len(v) - 1))],
            "min": v[0]}


def analyse(report: dict[str, Any], events: list[dict[str, Any]]) -> None:
    tcp = [f for f in report["flows"] if f["kind"] == "tcp"]
    udp = [f for f in report["flows"] if f["kind"] == "udp"]
    nat = [f for f in report["flows"] if f["kind"] == "nat"]
    for ev in events:
        t0, t1 = ev["t_event"], ev.get("t_takeover") or ev["t_event"]
        # a silence that starts just after the VIP move (a new master without the state) counts too
        tw = t1 + AFTER_TAKEOVER
        tg = event_gaps(tcp, t0, tw)
        ev["tcp_gap_s"] = summarize(tg)
        ev["udp_gap_s"] = summarize(event_gaps(udp, t0, tw))
        ev["nat_gaps"] = event_gaps(nat, t0, tw)
        ev["nat_gap_s"] = summarize(ev["nat_gaps"])
        ev["tcp_gaps"] = tg
        ev["tcp_errors_in_event"] = sum(
            1 for f in tcp if f["error_at"] and t0 <= f["error_at"] <= ev.get("t_recovered", t1 + 60))
        ev["hangs"] = sum(1 for f in tcp if not f["error"] and not (f["last_echo"] and f["last_echo"] > t1))
        ev["slow"] = sum(1 for g in tg if t0 + g > t1 + HANG_AFTER_TAKEOVER)
    errs = [f for f in tcp if f["error"]]
    report_summary = {
        "tcp": len(tcp),
        "udp": len(udp),
        "kept": len(tcp) - len(errs),
        "lost": len(errs),
        "resets": sum(1 for f in errs if f["error_kind"] in ("reset", "eof")),
        "hangs": sum(1 for f in errs if f["error_kind"] in ("hang", "timeout")),
        "errors": sorted({f"{f['error_kind']}: {f['error']}" for f in errs})[:10],
        "udp_echoed_all": all(f["echoed"] > 0 for f in udp),
        "nat": len(nat),
        "nat_kept": sum(1 for f in nat if not f["error"]),
        "nat_errors": sorted({f"{f['error_kind']}: {f['error']}" for f in nat if f["error"]})[:10],
        "udp_lost_datagrams": sum(f["sent"] - f["echoed"] for f in udp),
    }
    report["summary"] = report_summary


# --------------------------------------------------------------------------- a pass


def wait_commit(lab: Lab, node: str, t_event: float, inject: bool) -> dict[str, Any]:
    """The notify hook's summary and (with an external cache) conntrackd's commit in `node`'s journal.
    With direct injection there is nothing to commit: the state was in the kernel before the event."""
    def probe() -> dict[str, Any] | bool:
        ci = commit_info(lab.journal(node, t_event - 1))
        return ci["notify"] is not None and (inject or ci["committed"] is not None) and ci
    return wait(f"the {'hook' if inject else 'commit'} in {node}'s journal", probe, 30, 0.5)  # type: ignore[return-value]


def playbook(name: str, *extra: str, check: bool = True) -> dict[str, Any]:
    """Run the installed collection's playbook ctpy.conntrack_tools.<name> against the lab inventory (the
    collections path comes from the environment: molecule's, or scripts/lab.sh's).  Returns rc, the
    duration and the output's tail; raises when `check` and it failed."""
    exe = Path(sys.executable).with_name("ansible-playbook")
    cmd = [str(exe) if exe.exists() else (shutil.which("ansible-playbook") or "ansible-playbook")]
    for inv in inventories_from_env():
        cmd += ["-i", inv]
    cmd += [f"ctpy.conntrack_tools.{name}", *extra]
    t = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = {"cmd": cmd[1:], "rc": res.returncode, "duration_s": round(time.monotonic() - t, 1),
           "tail": (res.stdout + res.stderr).splitlines()[-40:]}
    log(f"  ansible-playbook {' '.join(cmd[1:])}: rc={res.returncode} in {out['duration_s']} s")
    if check and res.returncode != 0:
        raise RuntimeError(f"{name} playbook failed (rc={res.returncode}): " + "\n".join(out["tail"][-15:]))
    return out


PLAYBOOK_RUNS: list[dict[str, Any]] = []  # the playbooks the passes ran, for the report
UPGRADE: dict[str, Any] = {}  # the upgrade pass: the background playbook, the wheel, versions before/after
WHEEL_MARKER = "/opt/conntrack-tools/.ctpy-wheel"  # "<sha256> <version>" of the wheel the node's venv runs


def bumped_wheel() -> tuple[Path, str]:
    """A second real version of our package: the working tree copied (git's view: tracked and untracked,
    not ignored), galaxy.yml's version bumped in its last field, `pip wheel` (as scripts/build-dist.sh)."""
    import tempfile
    version = re.search(r"^version:\s*(\S+)", (ROOT / "galaxy.yml").read_text(), re.M).group(1)  # type: ignore[union-attr]
    parts = version.split(".")
    new = ".".join(parts[:-1] + [str(int(parts[-1]) + 1)])
    tmp = Path(tempfile.mkdtemp(prefix="ctpy-upgrade-"))
    src = tmp / "src"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for f in files:
        if f and (ROOT / f).is_file() and not f.startswith(("molecule/", "tests/", "bench/", "fuzz/")):
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    g = src / "galaxy.yml"
    g.write_text(re.sub(r"^version:.*$", f"version: {new}", g.read_text(), count=1, flags=re.M))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp), str(src)],
                   check=True, capture_output=True, text=True)
    shutil.rmtree(src, ignore_errors=True)
    wheel = tmp / f"conntrack_tools_py-{new}-py3-none-any.whl"
    if not wheel.exists():
        raise RuntimeError(f"the bumped wheel {wheel.name} was not built")
    return wheel, new


def start_background(name: str, *extra: str) -> None:
    """ctpy.conntrack_tools.<name> in the background: the pass measures the VIP moves it makes meanwhile."""
    exe = Path(sys.executable).with_name("ansible-playbook")
    cmd = [str(exe) if exe.exists() else (shutil.which("ansible-playbook") or "ansible-playbook")]
    for inv in inventories_from_env():
        cmd += ["-i", inv]
    cmd += [f"ctpy.conntrack_tools.{name}", *extra]
    log(f"  ansible-playbook {' '.join(cmd[1:])} (background)")
    UPGRADE["t0"] = time.monotonic()
    UPGRADE["cmd"] = cmd[1:]
    UPGRADE["proc"] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def start_upgrade(lab: Lab) -> None:
    wheel, version = bumped_wheel()
    UPGRADE.update(wheel=str(wheel), version=version,
                   before={n: sh(lab.c(n), f"cat {WHEEL_MARKER}").strip() for n in lab.info["firewalls"]})
    start_background("upgrade", "-e", f"conntrack_tools_wheel={wheel}", "-e", f"conntrack_tools_version={version}")


def finish_background() -> str:
    """Wait for the background playbook; its output.  Raises when it failed."""
    proc = UPGRADE.pop("proc")
    out, _ = proc.communicate(timeout=900)
    run = {"cmd": UPGRADE["cmd"], "rc": proc.returncode, "duration_s": round(time.monotonic() - UPGRADE["t0"], 1),
           "tail": out.splitlines()[-40:]}
    PLAYBOOK_RUNS.append(run)
    log(f"  background playbook {UPGRADE['cmd']}: rc={proc.returncode} in {run['duration_s']} s")
    if proc.returncode != 0:
        raise RuntimeError("background playbook failed: " + "\n".join(run["tail"][-15:]))
    return out


def vip_time_or_background(lab: Lab, watch: subprocess.Popen[str], timeout: float) -> float:
    """Lab.vip_time, but a background playbook that fails meanwhile ends the wait with its output."""
    proc = UPGRADE.get("proc")
    if proc is None:
        return lab.vip_time(watch, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out, _ = watch.communicate(timeout=1)
            return float(out.strip())
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() not in (None, 0):
            watch.kill()
            finish_background()  # raises with the playbook's output
    watch.kill()
    raise RuntimeError(f"the VIPs did not move within {timeout:.0f} s")


def finish_upgrade(lab: Lab) -> None:
    try:
        out = finish_background()
    finally:
        UPGRADE["after"] = {n: sh(lab.c(n), f"cat {WHEEL_MARKER}").strip() for n in lab.info["firewalls"]}
    (Path(UPGRADE["wheel"]).parent / "out.log").write_text(out)


def take_down(lab: Lab, kind: str, node: str) -> None:
    if kind == "kill":
        podman("kill", lab.c(node))
    elif kind == "upgrade":
        start_upgrade(lab)
    elif kind == "migrate":  # to the C daemon (HashSize > 8192 for C 1.4.7), drained first
        start_background("migrate", "-e", f"migrate_node={node}", "-e", "migrate_to=c",
                         "-e", "conntrackd_hash_size=16384")
    elif kind == "drain":
        PLAYBOOK_RUNS.append(playbook("maintenance", "-e", "maintenance_action=drain", "-e",
                                      f"maintenance_node={node}"))
    else:
        sh(lab.c(node), "systemctl stop keepalived")


def bring_back(lab: Lab, kind: str, node: str) -> None:
    if kind == "kill":
        podman("start", lab.c(node))
    elif kind == "upgrade":
        finish_upgrade(lab)
    elif kind == "migrate":  # the move to C ends with the undrain (event 2); then back to ours, as users do
        finish_background()
        UPGRADE["t_undrain"] = float(sh(lab.c(node), f"date -r {DRAIN_FILE} +%s.%N").strip())
        UPGRADE["implementation_mid"] = sh(lab.c(node), "systemctl show -p ExecStart --value conntrackd")
        PLAYBOOK_RUNS.append(playbook("migrate", "-e", f"migrate_node={node}", "-e", "migrate_to=python"))
        UPGRADE["implementation_after"] = sh(lab.c(node), "systemctl show -p ExecStart --value conntrackd")
    elif kind == "drain":
        PLAYBOOK_RUNS.append(playbook("maintenance", "-e", "maintenance_action=undrain", "-e",
                                      f"maintenance_node={node}"))
    else:
        sh(lab.c(node), "systemctl start keepalived")


EVENT_WHAT = {"kill": "podman kill", "drain": "maintenance.yml drain of", "upgrade": "upgrade.yml switchover from",
              "migrate": "migrate.yml (to C) drain of"}
BACK_WHAT = {"kill": "podman start", "drain": "maintenance.yml undrain", "upgrade": "upgrade.yml undrain",
             "migrate": "migrate.yml undrain (C), then migrate.yml back to ours"}


def run_pass(lab: Lab, kind: str, tcp: int, udp: int, nat: int, ftp: bool = False) -> dict[str, Any]:
    info = lab.info
    master, backup = wait("one node holding every VIP", lab.roles, 60, 0.5)
    log(f"pass '{kind}': master {master} ({info['implementation'][master]}), "
        f"backup {backup} ({info['implementation'][backup]}); {tcp} TCP + {udp} UDP + {nat} source-NATed TCP flows")
    ensure_echo_server(lab)
    start_flows(lab, tcp, udp, nat)
    if ftp:
        start_ftp(lab)
    t = time.monotonic()

    def all_flowing() -> bool:
        s = snapshot(lab)
        return len(s["flows"]) == tcp + udp + nat and all(f["echoed"] >= 10 for f in s["flows"])

    wait("every flow echoing", all_flowing, 60, 0.5)
    if ftp:
        wait("FTP transfers", lambda: sum(1 for t in ftp_snapshot(lab)["transfers"] if t[2] is None) >= 3, 30, 0.5)
    open_s = time.monotonic() - t
    t = time.monotonic()
    inject = info["inject"][backup]  # the synced state lives in the backup's kernel table, not its cache
    where = "kernel" if inject else "external"
    wait(f"{tcp} TCP flows in {backup}'s {where} {'table' if inject else 'cache'}",
         lambda: (c := lab.count_flows(backup, where))["tcp"] >= tcp and (not inject or c["nat"] >= nat), 60, 0.5)
    nat_src = nat_sources(lab) if nat else []
    sync_s = time.monotonic() - t
    if kind == "nosync":
        # The control: the backup forgets what it was sent (FTFW only sends state changes, and an
        # established, busy flow has none), so the new master has nothing to commit.
        if inject:
            sh(lab.c(backup), f"conntrack -D -s {info['client_ip']} -d {info['server_ip']} >/dev/null 2>&1 || true")
        else:
            sh(lab.c(backup), "conntrackd -f external")
        wait(f"{backup}'s {where} state to be empty",
             lambda: lab.count_flows(backup, where)["tcp"] == 0, 10, 0.5)
        # the deletion must not have travelled to the master (its connections would die before the event)
        wait(f"{master}'s kernel table to keep the flows",
             lambda: lab.count_flows(master, "kernel")["tcp"] >= tcp, 5, 0.5)
    pre = {"master_internal": lab.count_flows(master, "internal"),
           "backup_external": lab.count_flows(backup, "external"),
           "backup_kernel": lab.count_flows(backup, "kernel")}
    log(f"  {tcp + udp} flows up in {open_s:.1f} s; backup's external cache complete {sync_s:.1f} s later: {pre}")
    time.sleep(1.0)  # a second of steady traffic before the event
    events = []

    # ---- failover
    what = EVENT_WHAT.get(kind, "systemctl stop keepalived on")
    drops0, replaced0 = invalid_drops_all(lab), replaced_all(lab)
    invalid_packets(lab)  # forget what earlier passes dropped
    watch = lab.vip_watch(backup)
    t_event = time.time()
    take_down(lab, kind, master)
    t_vip = vip_time_or_background(lab, watch, 600 if kind in ("upgrade", "migrate") else 60)
    if kind in ("drain", "upgrade", "migrate"):  # the playbook's checks run first: the event is the drain file's change
        t_event = float(sh(lab.c(master), f"date -r {DRAIN_FILE} +%s.%N").strip())
    log(f"  {what} {master}: {backup} holds the VIPs after {t_vip - t_event:.2f} s")
    commit = wait_commit(lab, backup, t_event, info["inject"][backup])
    kernel = lab.count_flows(backup, "kernel")
    window = CONTROL_WINDOW if kind == "nosync" else HANG_AFTER_TAKEOVER + 10
    t_rec, back = wait_recovered(lab, t_vip, window, quiet=kind == "nosync")
    drops, replaced = drops_since(drops0, invalid_drops_all(lab)), drops_since(replaced0, replaced_all(lab))
    log(f"  committed {commit['committed']} entries in {commit['commit_s']} s; "
        f"{backup}'s kernel table: {kernel}; {back}/{tcp} connections echoed again within "
        f"{t_rec - t_vip:.1f} s of the takeover; packets dropped as ct state invalid: {drops}; "
        f"live entries replaced by injection: {replaced}")
    events.append({"event": f"{kind} {master}", "from": master, "to": backup,
                   "implementation_to": info["implementation"][backup], "t_event": t_event,
                   "t_takeover": t_vip, "takeover_s": round(t_vip - t_event, 3), "commit": commit,
                   "kernel_after": kernel, "t_recovered": t_rec, "recovered": back, "pre": pre,
                   "inject": info["inject"][backup], "invalid_dropped": sum(drops.values()),
                   "invalid_by_node": drops, "replaced_by_node": replaced,
                   "invalid_packets": invalid_packets(lab)})

    if kind == "drain":  # while the node is drained: a full resync of the pair (resync.yml), under the same flows
        PLAYBOOK_RUNS.append(playbook("resync", "-e", "pair=pair_lab"))

    # ---- failback: the first node comes back and preempts
    drops0, replaced0 = invalid_drops_all(lab), replaced_all(lab)
    invalid_packets(lab)
    if kind == "kill":  # the container is down: nothing to watch from until it boots
        t_event = time.time()
        bring_back(lab, kind, master)
        t_vip = lab.vip_time(wait(f"{master} to boot", lambda: running(lab.c(master)) and lab.vip_watch(master),
                                  60, 0.2), 120)
    else:
        watch = lab.vip_watch(master)
        t_event = time.time()
        bring_back(lab, kind, master)
        t_vip = lab.vip_time(watch, 600)
        if kind in ("drain", "upgrade"):
            t_event = float(sh(lab.c(master), f"date -r {DRAIN_FILE} +%s.%N").strip())
        elif kind == "migrate":  # the undrain onto the C daemon, before the way back to ours
            t_event = UPGRADE["t_undrain"]
    log(f"  failback: {master} holds the VIPs again {t_vip - t_event:.2f} s after "
        f"{BACK_WHAT.get(kind, 'systemctl start keepalived')}")
    commit = wait_commit(lab, master, t_event, info["inject"][master])
    kernel = lab.count_flows(master, "kernel")
    t_rec, back = wait_recovered(lab, t_vip, window, quiet=kind == "nosync")
    drops, replaced = drops_since(drops0, invalid_drops_all(lab)), drops_since(replaced0, replaced_all(lab))
    log(f"  committed {commit['committed']} entries in {commit['commit_s']} s; "
        f"{master}'s kernel table: {kernel}; {back}/{tcp} connections echoed again within "
        f"{t_rec - t_vip:.1f} s of the takeover; live entries replaced by injection: {replaced}")
    # The takeover moment of a failback is when the VIPs appear on the returning node; the
    # connections only notice from the moment the old master lets them go, which is about then.
    events.append({"event": f"failback to {master}", "from": backup, "to": master,
                   "implementation_to": info["implementation"][master], "t_event": t_vip - 1.0,
                   "t_restart": t_event, "t_takeover": t_vip, "takeover_s": round(t_vip - t_event, 3),
                   "commit": commit, "kernel_after": kernel, "t_recovered": t_rec, "recovered": back,
                   "inject": info["inject"][master], "invalid_dropped": sum(drops.values()),
                   "invalid_by_node": drops, "replaced_by_node": replaced,
                   "invalid_packets": invalid_packets(lab)})

    time.sleep(1.0)
    report = stop_flows(lab)
    analyse(report, events)
    if ftp:
        ftp_report = wait("the final FTP report", lambda: (f := ftp_snapshot(lab))["final"] and f, 30, 0.5)
        ftp_events(ftp_report, events)
        report["ftp"] = {"control_error": ftp_report["control_error"],
                         "transfers": len(ftp_report["transfers"]),
                         "failed": sum(1 for t in ftp_report["transfers"] if t[2] is not None)}
    flows = report.pop("flows")
    report["events"] = events
    report["kind"] = kind
    report["tcp_flows"], report["udp_flows"], report["nat_flows"] = tcp, udp, nat
    report["nat_sources"] = nat_src
    report["open_s"] = round(open_s, 2)
    report["sync_s"] = round(sync_s, 2)
    report["errors_detail"] = [f for f in flows if f["error"]][:20]
    if kind == "upgrade":
        report["upgrade"] = {k: v for k, v in UPGRADE.items() if k in ("wheel", "version", "before", "after")}
    if kind == "migrate":
        report["migrate"] = {k: UPGRADE.get(k) for k in ("implementation_mid", "implementation_after")}
    for ev in events:
        log(f"  {ev['event']}: TCP gap max {ev['tcp_gap_s']['max']} s, median {ev['tcp_gap_s']['median']} s;"
            f" UDP gap max {ev['udp_gap_s']['max']} s")
    s = report["summary"]
    log(f"  pass '{kind}': kept {s['kept']}/{s['tcp']} TCP, lost {s['lost']} "
        f"(resets {s['resets']}, hangs {s['hangs']})")
    return report


def run_refuse(lab: Lab) -> dict[str, Any]:
    """Bad input: conntrackd stopped on the backup, then a drain of the master.  The playbook's pre-check
    must stop it before any change and say why: the drain file, the VIPs and keepalived's config stay as
    they were.  conntrackd is started again afterwards and the pair given time to resync."""
    master, backup = wait("one node holding every VIP", lab.roles, 60, 0.5)
    log(f"pass 'refuse': conntrackd stopped on {backup}, then a drain of {master}")
    probe = f"cat {DRAIN_FILE} {WHEEL_MARKER}; md5sum /etc/keepalived/keepalived.conf"
    before = {n: sh(lab.c(n), probe) for n in lab.info["firewalls"]}
    # check mode first, on the healthy pair: the drain reports its change and makes none
    check = playbook("maintenance", "-e", "maintenance_action=drain", "-e", f"maintenance_node={master}", "--check",
                     check=False)
    check_unchanged = before == {n: sh(lab.c(n), probe) for n in lab.info["firewalls"]} and lab.roles()[0] == master
    sh(lab.c(backup), "systemctl stop conntrackd")
    try:
        run = playbook("maintenance", "-e", "maintenance_action=drain", "-e", f"maintenance_node={master}",
                       check=False)
        after = {n: sh(lab.c(n), probe) for n in lab.info["firewalls"]}
        roles_after = lab.roles()
    finally:
        sh(lab.c(backup), "systemctl start conntrackd")
    messages = [line for line in run["tail"] if "precheck:" in line]
    wait(f"{backup}'s conntrackd back",
         lambda: sh(lab.c(backup), "cat /run/conntrackd-ready", check=False).strip() == "0", 60, 0.5)
    log(f"  rc={run['rc']}; unchanged: {before == after}; master still {roles_after[0]}; {messages[:1]}")
    return {"kind": "refuse", "rc": run["rc"], "unchanged": before == after, "master_before": master,
            "master_after": roles_after[0], "messages": messages, "stopped": f"conntrackd on {backup}",
            "tail": run["tail"], "check_rc": check["rc"], "check_unchanged": check_unchanged,
            "check_recap": [line for line in check["tail"] if "changed=" in line]}


def client_id(lab: Lab) -> str:
    return podman("inspect", "--format", "{{.Id}}", lab.c("client")).stdout.strip()


def run(args: argparse.Namespace) -> int:
    lab = Lab(load_lab(args.inventory or inventories_from_env()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    t0 = time.monotonic()
    result: dict[str, Any] = {"lab": client_id(lab), "implementation": lab.info["implementation"],
                              "tcp": args.tcp, "udp": args.udp, "nat": args.nat, "passes": []}
    for kind in args.passes.split(","):
        tcp, udp, nat = PASS_FLOWS.get(kind, (args.tcp, args.udp, args.nat))
        try:
            if kind == "refuse":
                result["passes"].append(run_refuse(lab))
                continue
            result["passes"].append(run_pass(lab, kind, min(tcp, args.tcp), min(udp, args.udp),
                                             min(nat, args.nat), args.ftp and kind != "nosync"))
        except (TimeoutError, RuntimeError) as exc:
            log(f"pass '{kind}' failed: {exc}")
            result["passes"].append({"kind": kind, "failed": str(exc)})
            sh(lab.c("client"), f"touch {FLOWS_STOP}", check=False)
            break
    result["passes_requested"] = args.passes.split(",")
    result["playbooks"] = PLAYBOOK_RUNS
    result["duration_s"] = round(time.monotonic() - t0, 1)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print_report(result, short=args.short)
    return 0 if all("failed" not in p for p in result["passes"]) else 1


# --------------------------------------------------------------------------- report


def print_report(result: dict[str, Any], short: bool = False) -> None:
    impl = ", ".join(f"{n}={i}" for n, i in result["implementation"].items())
    print(f"\nfailover report ({result['tcp']} TCP + {result['udp']} UDP + {result.get('nat', 0)} source-NATed "
          f"TCP flows; conntrackd: {impl})")
    for p in result["passes"]:
        if "failed" in p:
            print(f"  pass {p['kind']}: FAILED: {p['failed']}")
            continue
        if p["kind"] == "refuse":
            print(f"  pass 'refuse': drain --check on the healthy pair: rc {p.get('check_rc')}, nothing changed: "
                  f"{p.get('check_unchanged')}; bad input ({p['stopped']} stopped, drain of {p['master_before']}): "
                  f"playbook rc {p['rc']}, nothing changed: {p['unchanged']}, master still {p['master_after']}")
            for m in p["messages"][:1]:
                print(f"    {m.strip()[:300]}")
            continue
        s = p["summary"]
        if p["kind"] == "nosync":
            ev = p["events"][0]
            print(f"  pass 'nosync' (control: the backup's synced state deleted before the takeover): "
                  f"{ev['recovered']}/{s['tcp']} connections echoed within {CONTROL_WINDOW:.0f} s of the takeover, "
                  f"{ev['invalid_dropped']} packets dropped as invalid by the pair")
            continue
        print(f"  pass '{p['kind']}': connections kept {s['kept']}/{s['tcp']}, lost {s['lost']} "
              f"(resets {s['resets']}, hangs {s['hangs']}); UDP flows answering {s['udp_echoed_all']}")
        for ev in p["events"]:
            c = ev["commit"]
            g = ev["tcp_gap_s"]
            if ev.get("inject") and c["committed"] is None:
                state = f"{ev['to']} ({ev['implementation_to']}) had the state in its kernel (direct injection)"
            else:
                state = (f"{ev['to']} ({ev['implementation_to']}) committed {c['committed']} entries "
                         f"in {c['commit_s']} s")
            ready = ""
            if c.get("ready_t") and ev.get("t_restart"):
                ready = f", ready {c['ready_t'] - ev['t_restart']:.2f} s after the restart"
            print(f"    {ev['event']:<24} VIPs moved in {ev['takeover_s']:.2f} s | per-connection gap "
                  f"max {g['max']:.2f} s, median {g['median']:.2f} s | {state}{ready}, "
                  f"{ev['kernel_after']['tcp']} TCP in its kernel table, "
                  f"{ev['invalid_dropped']} packets dropped as invalid on either firewall")
            if not short and c["notify"]:
                print(f"    {'':<24} {c['notify']}")
        if p.get("ftp"):
            f = p["ftp"]
            after = ", ".join(f"{ev['event']}: {ev['ftp_ok_after']} ok / {len(ev['ftp_failed_after'])} failed after "
                              f"the VIP move, pause {ev['ftp_gap_s']} s" for ev in p["events"])
            print(f"    FTP: control connection {'kept' if not f['control_error'] else f['control_error']}, "
                  f"{f['transfers'] - f['failed']}/{f['transfers']} transfers ok ({after})")
        if s.get("nat"):
            worst = max((ev["nat_gap_s"]["max"] or 0.0) for ev in p["events"])
            print(f"    NAT: {s['nat_kept']}/{s['nat']} source-NATed connections kept (server saw "
                  f"{', '.join(p.get('nat_sources') or ['?'])}), gap max {worst:.2f} s over all events")
        for e in s["errors"] + s.get("nat_errors", []):
            print(f"    error: {e}")
    print(f"  ({result['duration_s']} s)")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--passes", default="kill,stop,nosync", help="comma-separated: " + ", ".join(PASSES))
    r.add_argument("--tcp", type=int, default=100)
    r.add_argument("--udp", type=int, default=10)
    r.add_argument("--nat", type=int, default=20, help="TCP connections source-NATed to the inside VIP")
    r.add_argument("--ftp", action=argparse.BooleanOptionalAction, default=True,
                   help="an FTP session (helper-tracked data connections) in the kill and stop passes")
    r.add_argument("--out", default=str(DEFAULT_OUT))
    r.add_argument("-i", "--inventory", action="append")
    r.add_argument("--short", action="store_true")
    rep = sub.add_parser("report")
    rep.add_argument("file")
    rep.add_argument("--short", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "report":
        print_report(json.loads(Path(args.file).read_text()), short=args.short)
        return 0
    for k in args.passes.split(","):
        if k not in PASSES:
            p.error(f"unknown pass {k!r}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
