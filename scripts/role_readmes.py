#!/usr/bin/env python3
"""Write roles/<role>/README.md from the role's meta/argument_specs.yml (and meta/main.yml), so the README and the
specs cannot drift: tests/roles/test_collection.py fails when a README differs from what this script writes.

    scripts/role_readmes.py           rewrite every role's README.md
    scripts/role_readmes.py --check   exit 1 and name the stale READMEs
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


def _default(spec: dict[str, Any]) -> str:
    if "default" not in spec:
        return ""
    value = yaml.safe_dump(spec["default"], default_flow_style=True, width=10_000).strip()
    value = value.removesuffix("\n...").removesuffix("...").strip()
    return f"`{value}`".replace("|", "\\|")


def _type(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "str")
    if kind == "list" and "elements" in spec:
        kind = f"list of {spec['elements']}"
    if "choices" in spec:
        kind += " (" + ", ".join(f"`{c}`" for c in spec["choices"]) + ")"
    return kind


def readme(role: Path) -> str:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text()) or {}
    info = meta.get("galaxy_info", {})
    name = role.name
    out = [f"# {COLLECTION}.{name}", "",
           "<!-- Generated from meta/argument_specs.yml by scripts/role_readmes.py: edit the specs, then run it. -->",
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
            out.append(f"| `{option}` | {_type(ospec)} | {_default(ospec)} | {required} | "
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
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        text = readme(role)
        path = role / "README.md"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path.relative_to(ROOT)))
        if not check:
            path.write_text(text)
    if check and stale:
        print("stale (run scripts/role_readmes.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
