#!/usr/bin/env python3
"""Write roles/<role>/README.md from the role's meta/argument_specs.yml, defaults/main.yml (and meta/main.yml), so
the README and the specs cannot drift: tests/roles/test_collection.py fails when a README differs from what this
script writes.

One source per fact: a default value lives only in defaults/main.yml (the value Ansible uses; a spec's ``default``
would only be documentation, and a second copy to keep equal). ``--check`` also fails when a top-level option has a
``default`` in the spec, or when the spec and defaults/main.yml do not list the same variables (an option without
a default must be ``required``). Sub-options keep their ``default`` in the spec: they have no defaults file.

    scripts/role_readmes.py           rewrite every role's README.md
    scripts/role_readmes.py --check   exit 1 and name the stale READMEs and the spec/defaults mismatches
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "{namespace}.{name}".format(**yaml.safe_load((ROOT / "galaxy.yml").read_text()))


def _text(value: Any) -> str:
    """Ansible doc markup (C(), I(), O(), V(), M()) to Markdown, lists joined into paragraphs."""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    text = " ".join(str(value).split())
    text = re.sub(r"\b[CVO]\(([^)]*)\)", r"`\1`", text)
    text = re.sub(r"\bI\(([^)]*)\)", r"*\1*", text)
    return re.sub(r"\bM\(([^)]*)\)", r"`\1`", text)


def _cell(value: Any) -> str:
    return _text(value).replace("|", "\\|")


def _default(defaults: dict[str, Any], option: str, spec: dict[str, Any]) -> str:
    """The value defaults/main.yml gives ``option`` (nothing for a required one: its entry is a placeholder)."""
    if option not in defaults or spec.get("required"):
        return ""
    value = yaml.safe_dump(defaults[option], default_flow_style=True, width=10_000).strip()
    value = value.removesuffix("\n...").removesuffix("...").strip()
    return f"`{value}`".replace("|", "\\|")


def _type(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "str")
    if kind == "list" and "elements" in spec:
        kind = f"list of {spec['elements']}"
    if "choices" in spec:
        kind += " (" + ", ".join(f"`{c}`" for c in spec["choices"]) + ")"
    return kind


def _specs(role: Path) -> dict[str, Any]:
    return yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def _defaults(role: Path) -> dict[str, Any]:
    path = role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def mismatches(role: Path) -> list[str]:
    """Where the spec and defaults/main.yml disagree on which variables exist, or the spec repeats a default."""
    defaults = _defaults(role)
    out = []
    for entry, spec in _specs(role).items():
        options = spec.get("options") or {}
        for option, ospec in options.items():
            if "default" in ospec:
                out.append(f"{role.name} {entry}: {option} has a default in the spec (defaults/main.yml holds it)")
            elif option not in defaults and not ospec.get("required"):
                out.append(f"{role.name} {entry}: {option} is neither required nor in defaults/main.yml")
        if entry == "main":
            out += [f"{role.name}: {var} is in defaults/main.yml but not in the main argument spec"
                    for var in defaults if var not in options]
    return out


def readme(role: Path) -> str:
    specs = _specs(role)
    defaults = _defaults(role)
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text()) or {}
    info = meta.get("galaxy_info", {})
    name = role.name
    out = [f"# {COLLECTION}.{name}", "",
           "<!-- Generated from meta/argument_specs.yml and defaults/main.yml by scripts/role_readmes.py: edit those,"
           " then run it. -->",
           ""]
    if info.get("description"):
        out += [_text(info["description"]), ""]
    out += ["```yaml", "- hosts: ha_firewalls", "  roles:", f"    - {COLLECTION}.{name}", "```", ""]
    for entry, spec in specs.items():
        out += [f"## Entry point `{entry}`" + ("" if entry == "main" else f" (`tasks_from: {entry}.yml`)"), ""]
        if spec.get("short_description"):
            out += [f"**{_text(spec['short_description'])}**", ""]
        for paragraph in spec.get("description") or []:
            out += [_text(paragraph), ""]
        options = spec.get("options") or {}
        if not options:
            out += ["No options.", ""]
            continue
        if entry != "main" and options == specs.get("main", {}).get("options"):
            out += ["Same options as `main`.", ""]
            continue
        out += ["| option | type | default | required | description |", "|---|---|---|---|---|"]
        for option, ospec in options.items():
            required = "yes" if ospec.get("required") else ""
            out.append(f"| `{option}` | {_type(ospec)} | {_default(defaults, option, ospec)} | {required} | "
                       f"{_cell(ospec.get('description', ''))} |")
        out.append("")
    platforms = info.get("platforms") or []
    if platforms:
        out += ["## Platforms", ""]
        out += [f"* {p['name']}: {', '.join(str(v) for v in p.get('versions', []))}" for p in platforms]
        out.append("")
    out += [f"License: {info.get('license', 'GPL-2.0-or-later')}. More: docs/roles.md of the collection.", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    problems = []
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        problems += mismatches(role)
        text = readme(role)
        path = role / "README.md"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path.relative_to(ROOT)))
        if not check:
            path.write_text(text)
    for problem in problems:
        print(problem, file=sys.stderr)
    if check and stale:
        print("stale (run scripts/role_readmes.py): " + ", ".join(stale), file=sys.stderr)
    return 1 if problems or (check and stale) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
