"""Shared helpers for the template/role tests: inventory contexts, netns runs, a conntrackd.conf reader."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from conntrack_tools import render

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventories" / "example"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


def checkout_collections_path() -> Path:
    """A collections path whose ``ansible_collections/ctpy/conntrack_tools`` is this checkout (a link), so the
    checkout's playbooks and tests resolve the collection's modules and module_utils by FQCN."""
    tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]  # one per checkout, reused by every run
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ctpy-checkout-collections-{tag}"
    link = path / "ansible_collections" / "ctpy" / "conntrack_tools"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == ROOT):
        tmp = link.with_name(f".conntrack_tools-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(ROOT)
        tmp.replace(link)
    return path


def checkout_playbook_env() -> dict[str, str]:
    """The environment of an ``ansible-playbook`` run of this checkout's playbooks (roles and collection from the
    checkout, no colour, no retry files or deprecation and localhost warnings)."""
    return {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_COLLECTIONS_PATH": str(checkout_collections_path()), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_DEPRECATION_WARNINGS": "false", "ANSIBLE_HOST_KEY_CHECKING": "false"}


def netns_python(path: Path, netns: str, path_prefix: Path | None = None) -> str:
    """Write ``path``: an ``ansible_python_interpreter`` that runs the venv's Python in network namespace ``netns``
    (``ip netns exec``), so an inventory host with ``ansible_connection: local`` is that namespace; ``path_prefix``
    goes first in PATH (the tests' command shims)."""
    env = f"PATH={path_prefix}:$PATH " if path_prefix else ""
    path.write_text(f"#!/bin/sh\n{env}exec ip netns exec {netns} {VENV_BIN / 'python'} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def _load(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def inventory_groups() -> dict[str, list[str]]:
    tree = _load(INVENTORY / "hosts.yml")
    groups: dict[str, list[str]] = {}

    def walk(name: str, node: dict[str, Any]) -> list[str]:
        hosts = list((node.get("hosts") or {}).keys())
        for child, sub in (node.get("children") or {}).items():
            hosts += walk(child, sub or {})
        groups[name] = hosts
        return hosts

    walk("all", tree["all"])
    return groups


def context(host: str, **overrides: Any) -> dict[str, Any]:
    """Template variables for ``host`` the way ha_firewall hands them to the roles."""
    groups = inventory_groups()
    pair = next(g for g, hs in groups.items() if g.startswith("pair_") and host in hs)
    inv: dict[str, Any] = {}
    for part in (INVENTORY / "group_vars" / "ha_firewalls.yml", INVENTORY / "group_vars" / f"{pair}.yml",
                 INVENTORY / "host_vars" / f"{host}.yml"):
        inv.update(_load(part))
    inv.update(overrides)
    return build(host, groups, inv)


def build(host: str, groups: dict[str, list[str]], inv: dict[str, Any]) -> dict[str, Any]:
    """Role defaults + inventory + the ha_firewall variable mapping (its vars/main.yml, the file Ansible loads),
    resolved like Ansible would: the mapping wins over the inventory, as role vars do."""
    ha_firewall = render.role_defaults("ha_firewall", {"inventory_hostname": host, "groups": groups, **inv})
    merged = {**ha_firewall, **render.role_vars("ha_firewall", ha_firewall)}
    out: dict[str, Any] = {}
    for role in ("ha_firewall", "conntrack_tools", "keepalived", "conntrackd"):
        out.update(render.role_defaults(role, merged))
    # ha_firewall: keepalived tracks our daemon's readiness file (the C daemon has none)
    out["keepalived_readiness_file"] = (out["conntrackd_readiness_file"]
                                        if out["conntrackd_implementation"] == "python" else "")
    out["keepalived_readiness_weight"] = out["conntrackd_readiness_weight"]
    return out


def have_netns() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


def run_in_netns(interfaces: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a throw-away network namespace holding up veth ``interfaces``.

    VLAN names (eth1.101) are veths too: the 8021q module may be missing and keepalived only
    checks that the interface exists.
    """
    setup = []
    for i, name in enumerate(sorted(set(interfaces))):
        setup.append(f"ip link add {name} type veth peer name tpeer{i}")
        setup.append(f"ip link set {name} up")
    script = " && ".join(setup + ['exec "$@"'])
    return subprocess.run(["unshare", "--net", "sh", "-c", script, "sh", *argv],
                          capture_output=True, text=True, timeout=30)


def keepalived_interfaces(ctx: dict[str, Any]) -> list[str]:
    names = set()
    for inst in ctx["keepalived_instances"]:
        names.add(inst["interface"])
        names.update(v.get("dev") for v in inst["virtual_ipaddress"] if v.get("dev"))
        names.update(inst.get("track_interfaces", []))
    return sorted(names)


# --- conntrackd.conf structure -------------------------------------------------------------------

_TOKEN = re.compile(r"\{|\}|[^\s{}]+")


def parse_blocks(text: str) -> list[tuple[list[str], list]]:
    """Nested (words, children) tree of a conntrackd.conf; raises ValueError on unbalanced braces."""
    root: list = []
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        words: list[str] = []
        for tok in _TOKEN.findall(line):
            if tok == "{":
                node: tuple[list[str], list] = (words, [])
                stack[-1].append(node)
                stack.append(node[1])
                words = []
            elif tok == "}":
                if words:
                    stack[-1].append((words, []))
                    words = []
                if len(stack) == 1:
                    raise ValueError(f"unbalanced '}}' in: {raw!r}")
                stack.pop()
            else:
                words.append(tok)
        if words:
            stack[-1].append((words, []))
    if len(stack) != 1:
        raise ValueError("unclosed '{'")
    return root


def find(tree: list, *path: str) -> list[tuple[list[str], list]]:
    """Blocks whose first word matches each element of ``path`` in turn."""
    level = [(["<root>"], tree)]
    for name in path:
        level = [n for _, children in level for n in children if n[0] and n[0][0] == name]
    return level
