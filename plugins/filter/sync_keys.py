# -*- coding: utf-8 -*-
# Copyright: conntrack-tools-py developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/rotate_sync_key.yml: the pure part of a sync key rotation, unit-tested without Ansible.

``sync_keyring_parse`` reads the key file the conntrackd role wrote (``key <id> <hex>`` lines, the first
sends; the daemon's parser is conntrack_tools/daemon/sync/keyring.py), ``sync_key_steps`` derives the three
files of a rotation from the current and the target key list, ``sync_key_precheck`` says why a pair is not
ready (an empty string when it is).  Self-contained: the controller need not have our package installed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # unit tests without Ansible
    AnsibleFilterError = ValueError

_LINE = re.compile(r"^\s*key\s+([0-9]{1,3})\s+((?:[0-9a-fA-F]{2}){16,64})\s*(?:#.*)?$")


def sync_keyring_parse(text):
    """Key file text -> [{id, key}, ...] in file order; [] for no keyring (absent file, single-key form)."""
    out = []
    for line in (text or "").splitlines():
        m = _LINE.match(line)
        if m:
            out.append({"id": int(m.group(1)), "key": m.group(2).lower()})
    return out


def _norm(keys):
    return [{"id": int(k["id"]), "key": str(k["key"]).lower()} for k in keys]


def sync_key_reused(current, target):
    """Ids of ``target`` that ``current`` holds with another key (ids only: safe to print)."""
    have = dict((k["id"], k["key"]) for k in _norm(current))
    return [k["id"] for k in _norm(target) if k["id"] in have and have[k["id"]] != k["key"]]


def sync_key_steps(current, target):
    """[accept, send, drop]: the key lists to write on both nodes, in order.

    accept = current (its sending key still first) + the target keys it lacks; send = the target's first
    key first, then the rest of accept; drop = target.  A target id that is in current with another key
    is refused: one id names one key (the receiver selects the key by id)."""
    current, target = _norm(current), _norm(target)
    if not target:
        raise AnsibleFilterError("rotate_sync_key: the target key list (conntrackd_auth_keys) is empty")
    have = dict((k["id"], k["key"]) for k in current)
    reused = sync_key_reused(current, target)
    if reused:
        raise AnsibleFilterError(
            "rotate_sync_key: key id(s) %s already in use with another key: give the new key a fresh id"
            % ", ".join(str(i) for i in reused))
    accept = current + [k for k in target if k["id"] not in have]
    send = [target[0]] + [k for k in accept if k["id"] != target[0]["id"]]
    return [accept, send, target]


def sync_key_precheck(nodes, max_silence=10):
    """Why a pair is not ready to rotate ('' when it is).  ``nodes``: one dict per node with name, master
    (holds the VIPs), running (our daemon answered), auth (its JSON ``auth``), peer_silence (seconds, -1 never
    heard), file_ids (ids in its key file, in order) and file_digest (a hash of its key file's keys)."""
    if len(nodes) != 2:
        return "the pair must have exactly two nodes in this run"
    masters = [n["name"] for n in nodes if n.get("master")]
    if len(masters) != 1:
        return "not exactly one node holds the VIPs (masters: %s)" % (", ".join(masters) or "none")
    down = [n["name"] for n in nodes if not n.get("running")]
    if down:
        return "our conntrackd does not answer on %s" % ", ".join(down)
    off = [n["name"] for n in nodes if not (n.get("auth") or {}).get("enabled")]
    if off:
        return ("sync authentication is off on %s: turn it on with the cluster playbook first (that restarts)"
                % ", ".join(off))
    nofile = [n["name"] for n in nodes if not n.get("file_ids")]
    if nofile:
        return "no keyring written by the conntrackd role on %s (key <id> <hex> lines)" % ", ".join(nofile)
    if nodes[0].get("file_digest") != nodes[1].get("file_digest"):
        return "the two nodes' key files differ: finish the previous rotation (run this playbook again) or fix by hand"
    for n in nodes:
        auth, ids = n["auth"], list(n["file_ids"])
        if list(auth.get("key_ids") or []) != ids or auth.get("send_key_id") != ids[0]:
            return ("conntrackd on %s runs keys %s (sending %s) but its key file holds %s: a refused file? see its log"
                    % (n["name"], auth.get("key_ids"), auth.get("send_key_id"), ids))
    silent = [n["name"] for n in nodes if n.get("peer_silence") is None or not 0 <= n["peer_silence"] <= max_silence]
    if silent:
        return "the sync peer of %s has not been heard in the last %s s" % (", ".join(silent), max_silence)
    return ""


def sync_key_loaded(auth, keys):
    """True when a daemon's JSON ``auth`` shows exactly ``keys`` (ids, in order) with the first one sending."""
    ids = [int(k["id"]) for k in keys]
    return bool(auth) and list(auth.get("key_ids") or []) == ids and auth.get("send_key_id") == ids[0]


class FilterModule(object):
    def filters(self):
        return {
            "sync_keyring_parse": sync_keyring_parse,
            "sync_key_steps": sync_key_steps,
            "sync_key_reused": sync_key_reused,
            "sync_key_precheck": sync_key_precheck,
            "sync_key_loaded": sync_key_loaded,
        }
