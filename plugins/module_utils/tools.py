# -*- coding: utf-8 -*-
# Copyright: conntrack-tools-py developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared by the conntrack and conntrackd modules: find our binaries, run them, read their JSON."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

#: Where the ctpy.conntrack_tools.conntrack_tools role installs our tools (conntrack_tools_venv).
DEFAULT_BIN_DIR = "/opt/conntrack-tools/bin"
ROLE = "ctpy.conntrack_tools.conntrack_tools"


def find_binary(module, name, explicit=None):
    """The binary to run: ``explicit``, else ``/opt/conntrack-tools/bin/<name>``, else the PATH."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            module.fail_json(msg="%s is not an executable file" % explicit)
        return explicit
    ours = os.path.join(DEFAULT_BIN_DIR, name)
    if os.path.isfile(ours) and os.access(ours, os.X_OK):
        return ours
    found = module.get_bin_path(name, opt_dirs=["/usr/local/sbin", "/usr/sbin", "/sbin"])
    if not found:
        module.fail_json(msg="%s not found (looked in %s and the PATH): install conntrack-tools-py with the %s role"
                         % (name, DEFAULT_BIN_DIR, ROLE))
    return found


def c_tool_message(name, binary):
    return ("%s is netfilter's C %s, which has no JSON output (-o json): this module needs conntrack-tools-py's %s "
            "(the %s role installs it to %s/%s; or set the binary option)"
            % (binary, name, name, ROLE, DEFAULT_BIN_DIR, name))


def json_lines(text):
    """Parse JSON Lines; returns None if any non-empty line is not a JSON object."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        out.append(value)
    return out


def tool_error(stderr, stdout=""):
    """The tool's own message, without the ``conntrack v1.4.7 (conntrack-tools): `` prefix."""
    text = (stderr or stdout or "").strip()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("Try `")]
    msg = lines[0] if lines else "no output"
    if "): " in msg and msg.startswith(("conntrack v", "conntrackd v")):
        msg = msg.split("): ", 1)[1]
    return msg
