#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: conntrack-tools-py developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: conntrack
short_description: List, count, delete or flush the kernel's connection tracking entries
version_added: 0.1.0
description:
  - Runs conntrack-tools-py's C(conntrack) on the node (installed by the M(ctpy.conntrack_tools.conntrack_tools)
    role, or the one given in O(binary)).
  - Lists or counts entries with the CLI's filters, deletes the matching entries, or flushes a table.
  - Entries are returned as structured data, the JSON objects of C(conntrack -o json).
  - Deleting and flushing support check mode and C(--diff) (the entries that would be deleted).
  - Listing, deleting and counting with filters need C(-o json), which netfilter's C conntrack does not have;
    with only the C binary present the module fails and says so.
author:
  - conntrack-tools-py developers (@ctpy)
options:
  operation:
    description:
      - V(list) returns the matching entries, V(count) their number, V(delete) deletes the matching entries,
        V(flush) empties O(table).
    type: str
    choices: [list, count, delete, flush]
    default: list
  table:
    description:
      - The table. V(delete) works on V(conntrack) only; V(flush) on V(conntrack) and V(expect).
    type: str
    choices: [conntrack, expect, dying, unconfirmed]
    default: conntrack
  family:
    description: Layer 3 family (C(-f)).
    type: str
    choices: [ipv4, ipv6]
  protocol:
    description: Layer 4 protocol name or number (C(-p)), for example V(tcp) or V(udp).
    type: str
  src:
    description: Source address of the original direction (C(-s)).
    type: str
  dst:
    description: Destination address of the original direction (C(-d)).
    type: str
  reply_src:
    description: Source address of the reply direction (C(-r)).
    type: str
  reply_dst:
    description: Destination address of the reply direction (C(-q)).
    type: str
  sport:
    description: Source port of the original direction (C(--sport)). Needs O(protocol).
    type: int
  dport:
    description: Destination port of the original direction (C(--dport)). Needs O(protocol).
    type: int
  mark:
    description: Connection mark, C(value) or C(value/mask) (C(-m)).
    type: str
  zone:
    description: Conntrack zone (C(-w)).
    type: int
  state:
    description: Protocol state, for example V(ESTABLISHED) (C(--state)). Needs O(protocol).
    type: str
  status:
    description: Status bits that must be set, for example V(ASSURED) or V(SEEN_REPLY) (C(-u)).
    type: list
    elements: str
  binary:
    description:
      - Path of conntrack-tools-py's C(conntrack). Default C(/opt/conntrack-tools/bin/conntrack), then the PATH.
    type: path
notes:
  - Delete lists the matching entries, then deletes with the same filters; an entry created in between and
    matching the filters is deleted too, one destroyed in between is reported but not counted in RV(deleted).
  - Needs root (CAP_NET_ADMIN) on the node.
seealso:
  - module: ctpy.conntrack_tools.conntrackd
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
"""

EXAMPLES = r"""
- name: Established TCP connections to port 443
  ctpy.conntrack_tools.conntrack:
    protocol: tcp
    dport: 443
    state: ESTABLISHED
  register: https

- name: How many entries the kernel tracks
  ctpy.conntrack_tools.conntrack:
    operation: count
  register: ct_count

- name: Drop the UDP flows of a retired DNS server (check mode shows them first)
  ctpy.conntrack_tools.conntrack:
    operation: delete
    protocol: udp
    dst: 192.0.2.53
    dport: 53

- name: Empty the expectation table
  ctpy.conntrack_tools.conntrack:
    operation: flush
    table: expect
"""

RETURN = r"""
entries:
  description:
    - The matching entries (V(list)), or the entries deleted or to be deleted (V(delete)), as printed by
      C(conntrack -o json) (keys absent when the kernel did not send the attribute).
  returned: when O(operation) is V(list) or V(delete)
  type: list
  elements: dict
  sample:
    - {"event": null, "family": "ipv4", "proto": "tcp", "protonum": 6, "timeout": 431999, "state": "ESTABLISHED",
       "orig": {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 40000, "dport": 443},
       "reply": {"src": "10.0.0.2", "dst": "10.0.0.1", "sport": 443, "dport": 40000},
       "status": ["SEEN_REPLY", "ASSURED", "CONFIRMED"], "mark": 0, "use": 1}
count:
  description: Number of matching entries (V(list), V(count), V(delete)) or entries in the table before V(flush).
  returned: always
  type: int
  sample: 42
deleted:
  description: Entries the kernel deleted (V(delete) and V(flush); 0 in check mode).
  returned: when O(operation) is V(delete) or V(flush)
  type: int
  sample: 3
cmd:
  description: The last command run.
  returned: always
  type: list
  elements: str
"""

import json
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctpy.conntrack_tools.plugins.module_utils.tools import (
    c_tool_message,
    find_binary,
    json_lines,
    tool_error,
)

FILTERS = (
    ("family", "-f"), ("protocol", "-p"), ("src", "-s"), ("dst", "-d"), ("reply_src", "-r"), ("reply_dst", "-q"),
    ("sport", "--sport"), ("dport", "--dport"), ("mark", "-m"), ("zone", "-w"), ("state", "--state"),
)
DELETED = re.compile(r"(\d+) flow entries have been deleted")


def filter_args(params):
    argv = []
    for name, flag in FILTERS:
        value = params.get(name)
        if value is not None and value != "":
            argv += [flag, str(value)]
    if params.get("status"):
        argv += ["-u", ",".join(params["status"])]
    return argv


def has_filters(params):
    return bool(filter_args(params))


class Conntrack(object):
    def __init__(self, module, binary):
        self.module = module
        self.binary = binary
        self.cmd = []

    def run(self, argv):
        self.cmd = [self.binary] + argv
        return self.module.run_command(self.cmd, environ_update={"LC_ALL": "C"})

    def fail(self, stdout, stderr, what):
        self.module.fail_json(msg="%s failed: %s" % (what, tool_error(stderr, stdout)), cmd=self.cmd,
                              stdout=stdout, stderr=stderr)

    def list(self, table, params):
        rc, out, err = self.run(["-L", table] + filter_args(params) + ["-o", "json"])
        if rc != 0 or json_lines(out) is None:
            if "json" in err and ("Bad parameter" in err or "Unknown" in err):
                self.module.fail_json(msg=c_tool_message("conntrack", self.binary), cmd=self.cmd)
            self.fail(out, err, "conntrack -L")
        return json_lines(out)

    def count(self, table, params):
        if table == "conntrack" and not has_filters(params):
            rc, out, err = self.run(["-C"])
            if rc != 0 or not out.strip().isdigit():
                self.fail(out, err, "conntrack -C")
            return int(out.strip())
        return len(self.list(table, params))

    def delete(self, params):
        rc, out, err = self.run(["-D"] + filter_args(params))
        match = DELETED.search(err + out)
        if match is None or rc not in (0, 1):
            self.fail(out, err, "conntrack -D")
        return int(match.group(1))

    def flush(self, table):
        rc, out, err = self.run(["-F", table])
        if rc != 0:
            self.fail(out, err, "conntrack -F")


def as_diff(entries):
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            operation=dict(type="str", default="list", choices=["list", "count", "delete", "flush"]),
            table=dict(type="str", default="conntrack", choices=["conntrack", "expect", "dying", "unconfirmed"]),
            family=dict(type="str", choices=["ipv4", "ipv6"]),
            protocol=dict(type="str"),
            src=dict(type="str"),
            dst=dict(type="str"),
            reply_src=dict(type="str"),
            reply_dst=dict(type="str"),
            sport=dict(type="int"),
            dport=dict(type="int"),
            mark=dict(type="str"),
            zone=dict(type="int"),
            state=dict(type="str"),
            status=dict(type="list", elements="str"),
            binary=dict(type="path"),
        ),
        required_by=dict(sport="protocol", dport="protocol", state="protocol"),
        supports_check_mode=True,
    )
    p = module.params
    op, table = p["operation"], p["table"]
    if op == "delete" and table != "conntrack":
        module.fail_json(msg="operation=delete works on table=conntrack only, not %s" % table)
    if op == "flush" and table not in ("conntrack", "expect"):
        module.fail_json(msg="operation=flush works on table=conntrack or expect, not %s" % table)
    if op == "flush" and has_filters(p):
        module.fail_json(msg="operation=flush takes no filters (use operation=delete to delete matching entries)")

    ct = Conntrack(module, find_binary(module, "conntrack", p["binary"]))
    result = dict(changed=False)
    if op == "list":
        entries = ct.list(table, p)
        result.update(entries=entries, count=len(entries))
    elif op == "count":
        result.update(count=ct.count(table, p))
    elif op == "delete":
        entries = ct.list(table, p)
        result.update(entries=entries, count=len(entries), deleted=0)
        if entries:
            result["changed"] = True
            if module._diff:
                result["diff"] = dict(before=as_diff(entries), after="",
                                      before_header="conntrack entries", after_header="conntrack entries")
            if not module.check_mode:
                result["deleted"] = ct.delete(p)
                result["changed"] = result["deleted"] > 0
    else:
        before = ct.count(table, p) if table == "conntrack" else len(ct.list(table, p))
        result.update(count=before, deleted=0, changed=before > 0)
        if module._diff and before:
            result["diff"] = dict(before="%d %s entries\n" % (before, table), after="0 %s entries\n" % table)
        if before and not module.check_mode:
            ct.flush(table)
            result["deleted"] = before
    result["cmd"] = ct.cmd
    module.exit_json(**result)


if __name__ == "__main__":
    main()
