# Copyright: conntrack-tools-py developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pair health pre-check's decision (roles/ha_firewall/tasks/precheck.yml), pure and unit-tested without Ansible.

``pair_problems`` takes both nodes' readings (the ``ha_firewall_precheck`` fact of each node: a mapping by node name,
None for a node that did not answer; or the list of those that answered and ``nodes``) and the thresholds and
returns the reasons the pair is not healthy, one sentence each (an empty list when it is).  ``pair_master`` names
the pair's master ('' unless exactly one node holds VIPs).  ``sync_lag`` is the backup-lag rule alone: the
pre-check applies it master -> backup, the drain's final check drained node -> peer.

The lag (docs/operations.md):

* with an external cache on the receiver: entries, as the ConntrackdBackupLagging alert counts them: the sender's
  internal cache minus the receiver's external cache, over max(internal, 1000), above ``max_lag``;
* with direct injection, when the sender is our FTFW daemon: what the receiver has not acknowledged, dated: how long
  the oldest message the sender sent and the receiver did not acknowledge has waited (and how long the sender's TX
  queue stayed non-empty), above ``max_unacked_seconds``.  Entry counts are no measure there: the receiver's
  kernel forgets closed and short-lived entries at its own pace while the sender's cache keeps them until purge;
* otherwise (direct injection with NOTRACK/ALARM, or a sender too old to report acknowledgement ages): the
  entries as above against the receiver's kernel table.

Self-contained: the controller need not have our package installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # unit tests without Ansible
    AnsibleFilterError = ValueError

Reading = Mapping[str, Any]
Readings = Mapping[str, Reading | None] | Sequence[Reading]

#: A floor under the master's internal cache size for the entry-count lag (a small table's few in-flight entries are
#: not 5 %), as in the ConntrackdBackupLagging alert.
LAG_FLOOR = 1000


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None", "none"))


def _num(value: Any) -> float | None:
    """A reading's number, or None when the reading has none (None, '', 'None': not our daemon, no such cache)."""
    if _absent(value) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return bool(value)


def _fmt(value: Any) -> str:
    """A count or a number of seconds as the pre-check prints it: 617, 11.5."""
    n = _num(value)
    if n is None:
        return str(value)
    return f"{n:.0f}" if n == int(n) else f"{round(n, 3):g}"


def _pct(fraction: float) -> str:
    return str(round(fraction * 100, 1))


def _vips(reading: Reading) -> list[str]:
    vips = reading.get("vips") or []
    return [vips] if isinstance(vips, str) else list(vips)


def _readings(readings: Readings, nodes: Sequence[str] | None = None) -> list[tuple[str, Reading | None]]:
    """(node, reading or None) in name order, from a mapping node -> reading, or from the readings of the nodes
    that answered (each names its ``node``) plus ``nodes``, every node of the pair."""
    if isinstance(readings, Mapping):
        by_name = dict(readings)
    elif isinstance(readings, Sequence) and not isinstance(readings, str):
        if not all(isinstance(r, Mapping) and "node" in r for r in readings):
            raise AnsibleFilterError("pair_problems: every reading must name its node")
        by_name = {str(r["node"]): r for r in readings}
    else:
        raise AnsibleFilterError("pair_problems: the readings must be a mapping node -> reading or a list of readings")
    for n in nodes or ():
        by_name.setdefault(str(n), None)
    return [(str(n), by_name[n] if isinstance(by_name[n], Mapping) else None) for n in sorted(by_name)]


def pair_masters(readings: Readings) -> list[str]:
    """The nodes that hold at least one VIP, in name order."""
    return [str(r.get("node", n)) for n, r in _readings(readings) if r is not None and _vips(r)]


def pair_master(readings: Readings) -> str:
    """The pair's master: the one node holding VIPs, '' when none or both do."""
    masters = pair_masters(readings)
    return masters[0] if len(masters) == 1 else ""


def _entries_lag(sender: str, s: Reading, receiver: str, held: Any, max_lag: float) -> str:
    internal = _num(s.get("internal"))
    count = _num(held)
    if internal is None or count is None:
        return ""
    lag = (internal - count) / max(internal, LAG_FLOOR)
    if lag <= max_lag:
        return ""
    return (
        f"backup lagging: {receiver} holds {_fmt(held)} entries, the master {sender}'s internal cache "
        f"{_fmt(s.get('internal'))} ({_pct(lag)} % behind, limit {_pct(max_lag)} %)"
    )


def sync_lag(
    sender: Reading | None,
    receiver: Reading | None,
    max_lag: float = 0.05,
    max_unacked_seconds: float = 5.0,
    held: str = "auto",
    since: float | None = None,
) -> str:
    """Why ``receiver`` lags behind ``sender`` ('' when it does not, or when nothing says).

    ``held``: what stands for the receiver's entries in the count rule; ``auto`` its external cache when it has one,
    else its kernel table (the pre-check); ``kernel`` its kernel table (after a drain, the new master committed).
    ``since``: only what the sender sent more than this many seconds ago must be acknowledged (after a drain: the
    time since the reading before it; what the drained node sent since, e.g. the destroys of its expiring entries,
    may wait for the new master's ACK window, the new master sending data without a pause)."""
    if not isinstance(sender, Mapping) or not isinstance(receiver, Mapping):
        return ""
    sname, rname = str(sender.get("node", "?")), str(receiver.get("node", "?"))
    external = _num(receiver.get("external"))
    problems = []
    resend = sender.get("resend")
    age = _num(resend.get("oldest_unacked_seconds")) if isinstance(resend, Mapping) else None
    if age is not None:
        backlog = _num(resend.get("tx_backlog_seconds")) or 0.0
        waited = max(age, backlog)
        limit = max(float(max_unacked_seconds), _num(since) or 0.0)
        if waited > limit:
            problems.append(
                f"backup lagging: {rname} has not acknowledged the master {sname}'s sync messages for "
                f"{_fmt(waited)} s ({_fmt(resend.get('unacked', '?'))} unacknowledged, "
                f"{_fmt(resend.get('txqueue', '?'))} queued; limit {_fmt(limit)} s)"
            )
    if held == "kernel":
        count = receiver.get("kernel")
    else:
        count = receiver.get("external") if external is not None else receiver.get("kernel")
    if external is not None or age is None:
        msg = _entries_lag(sname, sender, rname, count, float(max_lag))
        if msg:
            problems.append(msg)
    return "; ".join(problems)


def pair_problems(
    readings: Readings,
    pair: str = "the pair",
    nodes: Sequence[str] | None = None,
    allow_drained: bool = False,
    max_silence: float = 10,
    max_lag: float = 0.05,
    max_unacked_seconds: float = 5.0,
    lag: bool = True,
) -> list[str]:
    """Every reason the pair is not healthy, in the pre-check's order (per node, then VRRP, drain, lag).

    ``nodes``: every node of the pair, when ``readings`` is the list of those that answered."""
    answers = _readings(readings, nodes)
    problems: list[str] = []
    for n, r in answers:
        if r is None:
            problems.append(f"{n} did not answer the pre-check")
            continue
        if not _bool(r.get("keepalived")):
            problems.append(f"keepalived is not running on {n}")
        silence = _num(r.get("peer_silence"))
        if r.get("conntrackd") == "down":
            problems.append(f"sync down: conntrackd does not answer on {n}")
        elif silence is not None and silence < 0:
            problems.append(f"sync down: conntrackd on {n} has never heard from its peer")
        elif silence is not None and silence > float(max_silence):
            problems.append(
                f"sync down: conntrackd on {n} has heard nothing from its peer for {_fmt(r.get('peer_silence'))} s "
                f"(limit {_fmt(max_silence)} s)"
            )
        if _vips(r) and not _bool(r.get("vips_all")):
            problems.append(f"VIPs split: {n} holds only {', '.join(_vips(r))}")
    masters = [str(r.get("node", n)) for n, r in answers if r is not None and _vips(r)]
    if not masters:
        problems.append(f"no master: no node of {pair} holds a VIP")
    elif len(masters) > 1:
        problems.append(f"both masters: {' and '.join(masters)} hold VIPs")
    drained = [str(r.get("node", n)) for n, r in answers if r is not None and _bool(r.get("drained"))]
    if len(drained) > 1:
        problems.append("both nodes are drained (maintenance playbook): undrain one first")
    elif len(drained) == 1:
        if not _bool(allow_drained):
            problems.append(
                f"{drained[0]} is drained (maintenance playbook): undrain it first"
                f" (-e maintenance_action=undrain -e maintenance_node={drained[0]})"
            )
        elif drained[0] in masters:
            problems.append(f"{drained[0]} is drained but still holds the VIPs")
    if _bool(lag) and len(masters) == 1:
        by_name = {str(r.get("node", n)): r for n, r in answers if r is not None}
        backups = [n for n in by_name if n != masters[0]]
        if backups:
            msg = sync_lag(by_name[masters[0]], by_name[backups[0]], max_lag, max_unacked_seconds)
            if msg:
                problems.append(msg)
    return problems


class FilterModule:
    def filters(self):
        return {
            "pair_problems": pair_problems,
            "pair_master": pair_master,
            "sync_lag": sync_lag,
        }
