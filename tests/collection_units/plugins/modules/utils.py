"""Run a module's main() with faked run_command/exit_json/fail_json; the tools' answers (ansible-test units)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

BANNER = "conntrack v1.4.7 (conntrack-tools): "
ENTRY = {"event": None, "family": "ipv4", "proto": "tcp", "protonum": 6, "timeout": 300, "state": "ESTABLISHED",
         "orig": {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1000, "dport": 80},
         "reply": {"src": "10.0.0.2", "dst": "10.0.0.1", "sport": 80, "dport": 1000},
         "status": ["ASSURED", "CONFIRMED"], "mark": 0, "use": 1}


class Exit(Exception):
    """What exit_json/fail_json were called with."""

    def __init__(self, result: dict, failed: bool) -> None:
        super().__init__(result)
        self.result, self.failed = result, failed


def run_module(module, args: dict, answers, check_mode: bool = False, diff: bool = False):
    """Run ``module.main()`` with ``args``; ``answers(argv)`` returns (rc, stdout, stderr). Returns (Exit, calls)."""
    calls: list[list[str]] = []

    def fake_run(self, argv, **kw):
        calls.append(list(argv))
        return answers(list(argv))

    def done(self, **kw):
        raise Exit(kw, False)

    def failed(self, msg, **kw):
        raise Exit({"msg": msg, **kw}, True)

    args = {**args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "run_command", fake_run), \
            mock.patch.object(basic.AnsibleModule, "exit_json", done), \
            mock.patch.object(basic.AnsibleModule, "fail_json", failed):
        with pytest.raises(Exit) as exc:
            module.main()
    return exc.value, calls


def lines(*entries: dict) -> str:
    """Our tools' -o json output (JSON Lines)."""
    return "".join(json.dumps(e) + "\n" for e in entries)
