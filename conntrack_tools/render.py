"""Render the deployment templates in ``templates/`` without Ansible.

The Ansible roles and this module render the *same* files (the roles reach them
through symlinks in ``roles/*/templates/``), with the same Jinja2 settings the
``ansible.builtin.template`` module uses (``trim_blocks=True``,
``lstrip_blocks=False``, trailing newline kept).  The templates only use plain
Jinja2 plus Ansible's ``bool`` filter, which is re-implemented here, so a
template that renders here renders byte-for-byte the same under Ansible.

Library use::

    from conntrack_tools import render
    text = render.render("keepalived.conf.j2", variables)
    variables = render.role_defaults("conntrackd") | overrides

Command line (entry point ``conntrack-tools-render``)::

    conntrack-tools-render keepalived.conf.j2 -e @vars.json -e keepalived_node=fw1 -o out.conf
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

__all__ = [
    "TemplateError",
    "environment",
    "list_templates",
    "render",
    "role_defaults",
    "role_vars",
    "templates_dir",
    "main",
]

#: Where templates/ and roles/*/defaults live: inside the package when installed from a wheel
#: (setup.py copies them into conntrack_tools/_data/), else the checkout's root.
_DATA = Path(__file__).resolve().parent / "_data"
_ROOT = _DATA if (_DATA / "templates").is_dir() else Path(__file__).resolve().parent.parent
_ENV_VAR = "CONNTRACK_TOOLS_TEMPLATES"

_TRUE_STRINGS = frozenset({"yes", "on", "1", "true", "y", "t"})


class TemplateError(Exception):
    """A template could not be rendered (missing variable, syntax error, bad input)."""


def _to_bool(value: Any) -> bool:
    """Ansible's ``bool`` filter: booleans pass, strings/numbers are interpreted."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_STRINGS
    return False


def templates_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding the ``*.j2`` files: argument, ``$CONNTRACK_TOOLS_TEMPLATES``, or the repo's."""
    if override is not None:
        return Path(override)
    from_env = os.environ.get(_ENV_VAR)
    if from_env:
        return Path(from_env)
    return _ROOT / "templates"


def environment(directory: str | os.PathLike[str] | None = None) -> jinja2.Environment:
    """A Jinja2 environment configured like ``ansible.builtin.template``'s defaults."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir(directory))),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=False,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["bool"] = _to_bool
    return env


def list_templates(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the renderable templates (``*.j2``)."""
    return sorted(p.name for p in templates_dir(directory).glob("*.j2"))


def render(
    name: str,
    variables: Mapping[str, Any],
    *,
    directory: str | os.PathLike[str] | None = None,
) -> str:
    """Render template ``name`` with ``variables``; raise :class:`TemplateError` on any failure.

    The result is a complete string: callers write it only after rendering
    succeeded, so a bad variable never truncates a live file.
    """
    env = environment(directory)
    try:
        return env.get_template(name).render(**variables)
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"{name}: no such template in {templates_dir(directory)}") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{name}: {exc.message}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from exc
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise TemplateError(f"{name}: bad input: {exc!r}") from exc


def _expand(value: Any, context: Mapping[str, Any], env: jinja2.Environment) -> Any:
    """Template the strings inside ``value`` against ``context`` (Ansible-like lazy defaults)."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return env.from_string(value).render(**context)
    if isinstance(value, Mapping):
        return {k: _expand(v, context, env) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_expand(v, context, env) for v in value]
    return value


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_templated(v) for v in value.values())
    if isinstance(value, Sequence):
        return any(_templated(v) for v in value)
    return False


def role_defaults(
    role: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    roles_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """``roles/<role>/defaults/main.yml`` merged with ``overrides``, templated strings resolved.

    Expressions that need Ansible-only context (``hostvars``, ``groups``, ...) and
    are not overridden are dropped rather than guessed.  Needs PyYAML.
    """
    return _resolve({**_role_file(role, "defaults", roles_dir), **(overrides or {})})


def role_vars(
    role: str,
    context: Mapping[str, Any],
    *,
    roles_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """``roles/<role>/vars/main.yml`` resolved against ``context`` (e.g. ha_firewall's mapping onto the roles it
    includes: the same file Ansible loads). Only the file's own variables are returned."""
    data = _role_file(role, "vars", roles_dir)
    resolved = _resolve({**context, **data}, native=True)
    return {k: resolved[k] for k in data if k in resolved}


def _role_file(role: str, kind: str, roles_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    import yaml  # only the role helpers (and -e @FILE.yml) need it: imported late to keep start-up short

    path = Path(roles_dir) if roles_dir is not None else _ROOT / "roles"
    return yaml.safe_load((path / role / kind / "main.yml").read_text()) or {}


def _regex_replace(value: Any, pattern: str = "", replacement: str = "", ignorecase: bool = False) -> str:
    """Ansible's ``regex_replace`` filter (Python ``re`` syntax), for the role variable files."""
    return re.sub(pattern, replacement, str(value), flags=re.I if ignorecase else 0)


def _resolve(merged: dict[str, Any], native: bool = False) -> dict[str, Any]:
    """Template the strings in ``merged`` against each other, in a few passes (any order of reference).

    ``native``: a value that is one expression keeps its type (a mapping of dicts and lists, as Ansible's
    templating gives it); otherwise every templated value becomes a string (the defaults files need no more)."""
    from jinja2.nativetypes import NativeEnvironment

    env = (NativeEnvironment if native else jinja2.Environment)(undefined=jinja2.StrictUndefined)
    env.filters["bool"] = _to_bool
    env.filters["regex_replace"] = _regex_replace
    resolved: dict[str, Any] = {}
    pending = dict(merged)
    plain = {k: v for k, v in merged.items() if not _templated(v)}
    for _ in range(5):
        progress = False
        for key, value in list(pending.items()):
            try:
                resolved[key] = _expand(value, {**plain, **resolved}, env)
            except (jinja2.UndefinedError, TypeError, KeyError):
                continue
            del pending[key]
            progress = True
        if not pending or not progress:
            break
    return resolved


def _parse_extra(item: str) -> dict[str, Any]:
    if item.startswith("@"):
        path = Path(item[1:])
        text = path.read_text()
        if path.suffix in {".yml", ".yaml"}:
            import yaml

            loaded = yaml.safe_load(text)
        else:
            loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise TemplateError(f"{path}: top level must be a mapping")
        return loaded
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise TemplateError(f"-e {item!r}: want KEY=VALUE or @FILE")
    try:
        return {key: json.loads(value)}
    except json.JSONDecodeError:
        return {key: value}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="conntrack-tools-render",
        description="Render a deployment template (keepalived.conf, conntrackd.conf, ...) without Ansible.",
    )
    parser.add_argument("template", nargs="?", help="template name, e.g. conntrackd.conf.j2")
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE|@FILE",
        help="variables (JSON value or string); @FILE reads JSON or YAML; repeatable, later wins",
    )
    parser.add_argument(
        "-r",
        "--role-defaults",
        action="append",
        default=[],
        metavar="ROLE",
        help="start from roles/ROLE/defaults/main.yml (repeatable)",
    )
    parser.add_argument("-t", "--templates", help="templates directory (default: the repository's)")
    parser.add_argument("-o", "--output", help="write here instead of stdout (only after a successful render)")
    parser.add_argument("-l", "--list", action="store_true", help="list templates and exit")
    args = parser.parse_args(argv)

    try:
        if args.list:
            print("\n".join(list_templates(args.templates)))
            return 0
        if not args.template:
            parser.error("a template name is required")
        extra: dict[str, Any] = {}
        for item in args.extra_vars:
            extra.update(_parse_extra(item))
        variables: dict[str, Any] = {}
        for role in args.role_defaults:
            variables.update(role_defaults(role, extra))
        variables.update(extra)
        text = render(args.template, variables, directory=args.templates)
    except (TemplateError, OSError, ValueError) as exc:
        print(f"conntrack-tools-render: {exc}", file=sys.stderr)
        return 1
    if args.output:
        tmp = Path(args.output + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.output)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
