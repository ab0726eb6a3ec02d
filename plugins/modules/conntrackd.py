#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: conntrack-tools-py developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: conntrackd
short_description: Query a running conntrackd as facts, or run its actions (commit, flush, resync, bulk send)
version_added: 0.1.0
description:
  - Talks to a running conntrackd through its control socket with conntrack-tools-py's C(conntrackd) client
    (installed by the M(ctpy.conntrack_tools.conntrack_tools) role). The actions work with our daemon and
    with netfilter's C daemon (same control protocol); V(stats) needs our daemon, which answers in JSON
    (C(-o json)), and fails with a message that says so when the C daemon answers.
  - V(stats) reads the daemon's statistics (general, cache, runtime, network, link, queue views) and returns
    them as the fact C(conntrackd). It never changes anything.
  - The other commands run the daemon's actions. C(changed) is honest where the daemon can tell, V(commit) and
    V(flush) report a change only if the caches they act on hold entries.
author:
  - conntrack-tools-py developers (@ctpy)
options:
  command:
    description:
      - V(stats) gathers facts; V(commit) commits the external cache into the kernel table (C(-c));
        V(flush) empties the internal and/or external cache (C(-f)); V(resync) re-reads the kernel table into
        the internal cache (C(-R)); V(bulk_send) sends the internal cache to the peers (C(-B));
        V(request_resync) asks the peers for their caches (C(-n), FTFW and NOTRACK only).
    type: str
    choices: [stats, commit, flush, resync, bulk_send, request_resync]
    default: stats
  cache:
    description: The cache V(flush) empties (both by default).
    type: str
    choices: [both, internal, external]
    default: both
  config:
    description: The daemon's configuration file (its UNIX socket path is read from it).
    type: path
    default: /etc/conntrackd/conntrackd.conf
  binary:
    description:
      - Path of conntrack-tools-py's C(conntrackd). Default C(/opt/conntrack-tools/bin/conntrackd), then the PATH.
    type: path
notes:
  - V(resync), V(bulk_send) and V(request_resync) always report C(changed) (the daemon does not say what moved).
  - Needs the permissions of the daemon's control socket (root).
seealso:
  - module: ctpy.conntrack_tools.conntrack
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Read the daemon's statistics
  ctpy.conntrack_tools.conntrackd:
  register: ctd

- name: Show the external cache size
  ansible.builtin.debug:
    msg: "{{ ansible_facts.conntrackd.cache.external.entries }}"

- name: Commit the external cache (what a new master does)
  ctpy.conntrack_tools.conntrackd:
    command: commit

- name: Ask the peer for a full resync
  ctpy.conntrack_tools.conntrackd:
    command: request_resync
"""

RETURN = r"""
ansible_facts:
  description: Facts, for V(stats).
  returned: when O(command) is V(stats)
  type: dict
  contains:
    conntrackd:
      description:
        - One key per statistics view the daemon answered (C(ct), C(cache), C(runtime), C(network), C(link),
          C(queue), C(rsqueue)), each the JSON of C(conntrackd -s <view> -o json) without its C(view) key (and
          unwrapped when its only key is the view's name, so C(cache) maps cache names to their counters).
        - C(network) carries the node's VRRP C(role) as the daemon learnt it from the notify hook and the last
          C(transition) (time, from/to, entries committed, commit duration, readiness wait), see docs/failover.md.
        - With sync authentication, C(network.auth) says which keys the daemon runs (C(send_key_id), C(key_ids) in
          key file order, never key material), the rejected datagrams by kind (C(bad_mac), C(unknown_key), ...), per
          key id (C(by_key)) and the key file's C(reloads), C(refused) and C(last_error); the rotate_sync_key
          playbook waits on them.
        - C(running) is V(true) (the fact is only set when the daemon answered).
      type: dict
      sample:
        running: true
        cache: {"internal": {"entries": 120, "add_ok": 130}, "external": {"entries": 118}}
        link: {"links": []}
stats:
  description: The same data as the C(conntrackd) fact.
  returned: when O(command) is V(stats)
  type: dict
entries_before:
  description: Entries in the caches the action works on, before it ran (V(commit), V(flush)).
  returned: when O(command) is V(commit) or V(flush) and the daemon reports its caches
  type: dict
  sample: {"external": 118}
cmd:
  description: The last command run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctpy.conntrack_tools.plugins.module_utils.tools import (
    c_tool_message,
    find_binary,
    json_lines,
    tool_error,
)

VIEWS = ("ct", "cache", "runtime", "network", "link", "queue", "rsqueue")
ACTIONS = {
    "commit": ["-c"],
    "flush": ["-f"],
    "resync": ["-R"],
    "bulk_send": ["-B"],
    "request_resync": ["-n"],
}
CANNOT_CONNECT = "can't connect"


class Conntrackd(object):
    def __init__(self, module, binary, config):
        self.module = module
        self.binary = binary
        self.config = config
        self.cmd = []

    def run(self, argv):
        self.cmd = [self.binary, "-C", self.config] + argv
        return self.module.run_command(self.cmd, environ_update={"LC_ALL": "C"})

    def fail(self, what, out, err):
        msg = tool_error(err, out)
        if CANNOT_CONNECT in msg or "connect" in msg.lower():
            msg = "conntrackd does not answer on its control socket (is it running with %s?): %s" % (self.config, msg)
        self.module.fail_json(msg="%s failed: %s" % (what, msg), cmd=self.cmd, stdout=out, stderr=err)

    def view(self, name):
        """The JSON answer of one statistics view; None if the daemon has no data for it."""
        rc, out, err = self.run(["-s", name, "-o", "json"])
        if "Unknown option: -o" in err + out:
            self.module.fail_json(msg=c_tool_message("conntrackd", self.binary), cmd=self.cmd)
        if rc != 0:
            if "no JSON answer" in err:
                return None
            self.fail("conntrackd -s %s" % name, out, err)
        parsed = json_lines(out)
        if not parsed:
            if out.strip():
                self.module.fail_json(msg=c_tool_message("conntrackd", self.binary), cmd=self.cmd)
            return None
        data = dict(parsed[0])
        data.pop("view", None)
        if list(data) == [name]:  # {"cache": {...}} -> {...}
            data = data[name]
        return data

    def stats(self):
        facts = {"running": True}
        for name in VIEWS:
            data = self.view(name)
            if data:
                facts[name] = data
        if len(facts) == 1:
            self.module.fail_json(msg="conntrackd at %s answered no statistics view in JSON: netfilter's C conntrackd "
                                      "does not answer -o json requests (its actions work, stats need our daemon)"
                                  % self.config, cmd=self.cmd)
        return facts

    def cache_entries(self):
        caches = self.view("cache") or {}
        return dict((name, int(c.get("entries", 0))) for name, c in caches.items() if isinstance(c, dict))

    def action(self, command, cache):
        argv = list(ACTIONS[command])
        if command == "flush" and cache != "both":
            argv.append(cache)
        rc, out, err = self.run(argv)
        if rc != 0 or "ERROR" in err:
            self.fail("conntrackd %s" % " ".join(argv), out, err)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            command=dict(type="str", default="stats", choices=["stats"] + sorted(ACTIONS)),
            cache=dict(type="str", default="both", choices=["both", "internal", "external"]),
            config=dict(type="path", default="/etc/conntrackd/conntrackd.conf"),
            binary=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    ctd = Conntrackd(module, find_binary(module, "conntrackd", p["binary"]), p["config"])
    command = p["command"]
    result = dict(changed=False)
    if command == "stats":
        stats = ctd.stats()
        result.update(stats=stats, ansible_facts=dict(conntrackd=stats))
    else:
        changed = True
        if command in ("commit", "flush"):
            entries = ctd.cache_entries()
            wanted = {"commit": ["external"], "flush": ["internal", "external"]}[command]
            if command == "flush" and p["cache"] != "both":
                wanted = [p["cache"]]
            before = dict((name, entries[name]) for name in wanted if name in entries)
            result["entries_before"] = before
            if before:  # the daemon reported these caches: act only if they hold something
                changed = sum(before.values()) > 0
        if changed and not module.check_mode:
            ctd.action(command, p["cache"])
        result["changed"] = changed
    result["cmd"] = ctd.cmd
    module.exit_json(**result)


if __name__ == "__main__":
    main()
