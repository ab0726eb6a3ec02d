#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: conntrack-tools-py developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drill_probe
short_description: Probe traffic and address watch for a failover drill (the drill playbook)
version_added: 0.1.0
description:
  - The measuring side of the C(drill) playbook. Meant to run in the background (C(async), C(poll=0)) until
    O(stop_file) exists, then collected with C(ansible.builtin.async_status).
  - With O(target), opens O(connections) TCP connections to a TCP echo service behind the firewall pair, sends a
    line on each every O(interval) seconds and reads its echo. Writes C(ready) into O(ready_file) once every
    connection has echoed once (C(failed) and the reason when one cannot connect, and the module then ends). When
    O(stop_file) appears, each connection waits for the echo of its last line (up to O(hang_seconds)) and the
    module returns, per connection, its longest silence (time between two echoes) and whether it was kept.
  - With O(addresses), watches the addresses this host holds (C(ip -o addr show), every 20 ms) and returns the
    moments the host came to hold all, some or none of them.
  - Changes nothing on the host (besides O(ready_file)); reports C(changed=false).
author:
  - conntrack-tools-py developers (@ctpy)
options:
  target:
    description:
      - C(HOST:PORT) of a TCP echo service (C([IPv6]:PORT) for an IPv6 address). Excludes O(addresses).
    type: str
  connections:
    description: Number of TCP connections.
    type: int
    default: 20
  interval:
    description: Seconds between two lines on one connection.
    type: float
    default: 0.1
  connect_timeout:
    description: Seconds to wait for each connection to open and for its first echo.
    type: float
    default: 5
  hang_seconds:
    description:
      - A connection that gets no echo for this long is lost (a hang), during the run and when stopping.
    type: float
    default: 30
  addresses:
    description: Addresses to watch on this host (no prefix length). Excludes O(target).
    type: list
    elements: str
  stop_file:
    description: The probe ends when this file exists.
    type: path
    required: true
  ready_file:
    description: Written when the probe runs (C(ready)) or could not start (C(failed) and the reason).
    type: path
  max_seconds:
    description: The probe ends after this many seconds even without O(stop_file).
    type: float
    default: 900
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode nothing is opened or watched; the module returns at once.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - A TCP echo service is for example C(socat TCP-LISTEN:7777,fork,reuseaddr EXEC:cat).
"""

EXAMPLES = r"""
- name: Start the probe in the background
  ctpy.conntrack_tools.drill_probe:
    target: 192.0.2.10:7777
    connections: 20
    stop_file: /tmp/drill.stop
    ready_file: /tmp/drill.ready
  async: 1000
  poll: 0
  register: probe_job
"""

RETURN = r"""
connections:
  description: Connections opened (TCP probe).
  returned: with target
  type: int
kept:
  description: Connections that echoed their last line and never failed.
  returned: with target
  type: int
lost:
  description: Connections that failed (reset, closed, hang, wrong echo, could not connect).
  returned: with target
  type: int
resets:
  description: Lost connections that were reset or closed by the other side.
  returned: with target
  type: int
hangs:
  description: Lost connections that got no echo for O(hang_seconds).
  returned: with target
  type: int
gaps:
  description: Per connection, the longest silence in seconds (time between two echoes; for a lost connection also
    from its last echo to its failure).
  returned: with target
  type: list
  elements: float
gap_max:
  description: The longest of RV(gaps).
  returned: with target
  type: float
gap_median:
  description: The median of RV(gaps).
  returned: with target
  type: float
errors:
  description: The distinct errors of the lost connections (at most 10).
  returned: with target
  type: list
  elements: str
echoed:
  description: Lines echoed over all connections.
  returned: with target
  type: int
changes:
  description: With O(addresses), C([time, held]) pairs, C(held) one of V(all), V(some), V(none); the first one
    is the state when the watch began. Times are seconds since the epoch.
  returned: with addresses
  type: list
  elements: list
began:
  description: When the probe began (seconds since the epoch; not C(started), a key of C(async_status)).
  returned: always
  type: float
ended:
  description: When the probe ended (seconds since the epoch).
  returned: always
  type: float
"""

import os
import re
import socket
import threading
import time

from ansible.module_utils.basic import AnsibleModule


def write_file(path, text):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def parse_target(target):
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", target) or re.match(r"^([^:]+):(\d+)$", target)
    if not m or not 0 < int(m.group(2)) < 65536:
        return None
    return m.group(1), int(m.group(2))


class Conn(object):
    def __init__(self, idx):
        self.idx = idx
        self.lock = threading.Lock()
        self.echoed = 0
        self.last_echo = None
        self.longest = 0.0
        self.error = None
        self.error_kind = None
        self.error_at = None
        self.finished = False  # the echo of the last line arrived after the stop

    def echo(self, now):
        with self.lock:
            if self.last_echo is not None:
                self.longest = max(self.longest, now - self.last_echo)
            self.last_echo = now
            self.echoed += 1

    def fail(self, kind, msg):
        with self.lock:
            if self.error is None:
                self.error_kind, self.error, self.error_at = kind, msg, time.time()


def error_kind(exc):
    if isinstance(exc, (socket.timeout,)):
        return "hang"
    name = type(exc).__name__
    if name in ("ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError", "ConnectionRefusedError"):
        return "reset"
    return "other"


def run_conn(conn, addr, params, stop):
    try:
        sock = socket.create_connection(addr, timeout=params["connect_timeout"])
    except (OSError, socket.error) as exc:
        conn.fail("connect", "%s: %s" % (type(exc).__name__, exc))
        return
    sock.settimeout(0.2)  # short reads: the thread notices the stop; hangs are timed below
    buf = b""
    seq = 0
    next_send = time.monotonic()
    try:
        while True:
            stopping = stop.is_set()
            seq += 1
            line = ("%d %d\n" % (conn.idx, seq)).encode()
            sock.sendall(line)
            waited = time.monotonic()
            limit = params["hang_seconds"] if conn.echoed else params["connect_timeout"]
            while b"\n" not in buf:
                try:
                    chunk = sock.recv(4096)
                except socket.timeout:
                    if time.monotonic() - waited > limit:
                        conn.fail("hang", "no echo for %.0f s" % limit)
                        return
                    continue
                if not chunk:
                    conn.fail("reset", "connection closed by the other side")
                    return
                buf += chunk
            got, buf = buf.split(b"\n", 1)
            if got + b"\n" != line:
                conn.fail("bad-echo", "sent %r, got %r" % (line, got))
                return
            conn.echo(time.time())
            if stopping:
                conn.finished = True
                return
            next_send += params["interval"]
            delay = next_send - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_send = time.monotonic()
    except (OSError, socket.error) as exc:
        conn.fail(error_kind(exc), "%s: %s" % (type(exc).__name__, exc))
    finally:
        sock.close()


def median(values):
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2.0


def wait_stop(params, deadline, stop):
    while not os.path.exists(params["stop_file"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()


def tcp_probe(module, params):
    addr = parse_target(params["target"])
    if addr is None:
        module.fail_json(msg="drill_probe: target must be HOST:PORT (got %r)" % params["target"])
    began = time.time()
    deadline = time.monotonic() + params["max_seconds"]
    stop = threading.Event()
    conns = [Conn(i) for i in range(params["connections"])]
    threads = [threading.Thread(target=run_conn, args=(c, addr, params, stop)) for c in conns]
    for t in threads:
        t.daemon = True
        t.start()
    # ready once every connection echoed once; failed as soon as one failed before that
    start_by = time.monotonic() + params["connect_timeout"] + 1
    while True:
        failed = [c for c in conns if c.error]
        if failed:
            stop.set()
            write_file(params["ready_file"], "failed: connection %d to %s: %s\n"
                       % (failed[0].idx, params["target"], failed[0].error))
            module.fail_json(msg="drill_probe: connection %d to %s failed before the drill: %s"
                             % (failed[0].idx, params["target"], failed[0].error), began=began, ended=time.time())
        if all(c.echoed for c in conns):
            break
        if time.monotonic() > start_by:
            stop.set()
            write_file(params["ready_file"], "failed: no echo from %s\n" % params["target"])
            module.fail_json(msg="drill_probe: no echo from %s within %.0f s" % (params["target"],
                             params["connect_timeout"]), began=began, ended=time.time())
        time.sleep(0.02)
    write_file(params["ready_file"], "ready\n")
    wait_stop(params, deadline, stop)
    ended = time.time()
    for t in threads:
        t.join(params["hang_seconds"] + 5)
    lost = [c for c in conns if c.error or not c.finished]
    for c in lost:
        if not c.error:
            c.fail("hang", "no echo of the last line")
        if c.last_echo is not None:  # a lost connection's last silence lasts until it failed
            c.longest = max(c.longest, c.error_at - c.last_echo)
    gaps = [round(c.longest, 3) for c in conns]
    return dict(
        changed=False, began=began, ended=ended, connections=len(conns), kept=len(conns) - len(lost),
        lost=len(lost), resets=sum(1 for c in lost if c.error_kind == "reset"),
        hangs=sum(1 for c in lost if c.error_kind == "hang"), gaps=gaps, gap_max=max(gaps) if gaps else None,
        gap_median=median(gaps), errors=sorted(set("%s: %s" % (c.error_kind, c.error) for c in lost))[:10],
        echoed=sum(c.echoed for c in conns),
    )


def held(module, addresses):
    rc, out, err = module.run_command(["ip", "-o", "addr", "show"], environ_update={"LC_ALL": "C"})
    if rc != 0:
        module.fail_json(msg="drill_probe: ip -o addr show failed: %s" % err.strip())
    have = set(re.findall(r"inet6? ([0-9a-fA-F.:]+)/", out))
    n = sum(1 for a in addresses if a in have)
    return "all" if n == len(addresses) else ("none" if n == 0 else "some")


def watch(module, params):
    addresses = [a.split("/")[0] for a in params["addresses"]]
    began = time.time()
    deadline = time.monotonic() + params["max_seconds"]
    state = held(module, addresses)
    changes = [[round(began, 3), state]]
    write_file(params["ready_file"], "ready\n")
    while not os.path.exists(params["stop_file"]) and time.monotonic() < deadline:
        time.sleep(0.02)
        now = held(module, addresses)
        if now != state:
            state = now
            changes.append([round(time.time(), 3), state])
    return dict(changed=False, began=began, ended=time.time(), changes=changes)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            target=dict(type="str"),
            connections=dict(type="int", default=20),
            interval=dict(type="float", default=0.1),
            connect_timeout=dict(type="float", default=5),
            hang_seconds=dict(type="float", default=30),
            addresses=dict(type="list", elements="str"),
            stop_file=dict(type="path", required=True),
            ready_file=dict(type="path"),
            max_seconds=dict(type="float", default=900),
        ),
        mutually_exclusive=[("target", "addresses")],
        required_one_of=[("target", "addresses")],
        supports_check_mode=True,
    )
    params = module.params
    if module.check_mode:
        module.exit_json(changed=False, began=time.time(), ended=time.time(), msg="check mode: nothing probed")
    if params["connections"] < 1 or params["interval"] <= 0:
        module.fail_json(msg="drill_probe: connections must be at least 1 and interval above 0")
    if params["target"]:
        module.exit_json(**tcp_probe(module, params))
    module.exit_json(**watch(module, params))


if __name__ == "__main__":
    main()
