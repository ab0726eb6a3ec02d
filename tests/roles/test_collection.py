"""The release artifacts: one version everywhere, the collection tarball's contents, the collection installed into
a clean collections path (playbooks by FQCN), and the wheel installed with plain pip into a fresh venv."""

from __future__ import annotations

import json
import os
import platform
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from conntrack_tools import render

from .helpers import INVENTORY, ROOT, VENV_BIN

GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
VERSION = GALAXY["version"]
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
WHEEL_NAME = f"conntrack_tools_py-{VERSION}-py3-none-any.whl"
PLAYBOOKS = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml"))
SCRIPTS = ["conntrack", "conntrackd", "conntrackd-notify", "conntrack-tools-render"]
# Never in the artifact: sources (the wheel carries them), tests, benches, the lab, build outputs, venvs.
LEFT_OUT = ("conntrack_tools/", "tests/", "bench/", "fuzz/", "molecule/", "scripts/", "build/", "dist/", ".venv/",
            ".git/", ".ci/", "setup.py", "pyproject.toml", "Makefile", "conntrack_tools_py.egg-info/")

pytestmark = pytest.mark.skipif(not (VENV_BIN / "ansible-galaxy").exists(), reason="ansible-core is not in the venv")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "build-dist.sh"), str(out)], capture_output=True, text=True,
                         env={**os.environ, "VENV": str(VENV_BIN.parent)}, timeout=300)
    assert run.returncode == 0, run.stderr
    tarball = Path(run.stdout.strip().splitlines()[-1])
    assert tarball == out / f"{GALAXY['namespace']}-{GALAXY['name']}-{VERSION}.tar.gz"
    return {"tarball": tarball, "wheel": out / WHEEL_NAME}


@pytest.fixture(scope="module")
def installed(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball installed into an empty collections path; returns that path."""
    path = tmp_path_factory.mktemp("collections")
    run = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "-p", str(path),
                          str(artifacts["tarball"])], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return path


def test_one_version_for_package_collection_role_and_changelog(artifacts: dict[str, Path]) -> None:
    with zipfile.ZipFile(artifacts["wheel"]) as whl:
        metadata = whl.read(f"conntrack_tools_py-{VERSION}.dist-info/METADATA").decode()
    assert re.search(rf"^Version: {re.escape(VERSION)}$", metadata, re.M)
    defaults = yaml.safe_load((ROOT / "roles" / "conntrack_tools" / "defaults" / "main.yml").read_text())
    assert str(defaults["conntrack_tools_version"]) == VERSION
    changelog = yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())
    assert VERSION in changelog["releases"], "release the changelog: antsibull-changelog release"
    with tarfile.open(artifacts["tarball"]) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert manifest["collection_info"]["version"] == VERSION


def test_tarball_holds_every_file_the_roles_need_and_nothing_else(artifacts: dict[str, Path]) -> None:
    with tarfile.open(artifacts["tarball"]) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
    files = {n for n, m in members.items() if m.isfile()}
    for name, member in members.items():
        assert not any(name == p.rstrip("/") or name.startswith(p) for p in LEFT_OUT), f"{name} is in the artifact"
        assert "__pycache__" not in name and not name.endswith((".pyc", ".egg-info"))
        if member.issym():
            # A link must resolve to a regular file inside the artifact (installation keeps links as links).
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            assert target in files, f"{name} -> {member.linkname} dangles in the artifact"
    for required in ("LICENSE", "COPYING", "README.md", "CHANGELOG.rst", "meta/runtime.yml", "MANIFEST.json",
                     "FILES.json", f"roles/conntrack_tools/files/{WHEEL_NAME}"):
        assert required in files, f"{required} missing"
    # Every template/file a role task names is in the role, and every template of templates/ ships.
    for role in sorted(p.name for p in (ROOT / "roles").iterdir()):
        for tasks in (ROOT / "roles" / role / "tasks").glob("*.yml"):
            for task in yaml.safe_load(tasks.read_text()) or []:
                src = (task.get("ansible.builtin.template") or {}).get("src")
                if src:
                    assert f"roles/{role}/templates/{src}" in members, f"{role}: template {src} not shipped"
    for role in (ROOT / "roles").iterdir():
        assert f"roles/{role.name}/README.md" in files, f"{role.name} has no README in the artifact"
    for template in (ROOT / "templates").glob("*.j2"):
        assert f"templates/{template.name}" in files
    for playbook in PLAYBOOKS:
        assert f"playbooks/{playbook}.yml" in files


def test_role_readmes_match_their_argument_specs() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "role_readmes.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_installed_collection_resolves_its_links_and_syntax_checks_by_fqcn(installed: Path) -> None:
    root = installed / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    links = [p for p in root.rglob("*") if p.is_symlink()]
    assert links, "the role templates are expected to be links into templates/"
    for link in links:
        assert link.resolve().is_file() and link.resolve().is_relative_to(root.resolve()), link
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_ROLES_PATH": str(installed / "none"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false"}
    for playbook in PLAYBOOKS:
        run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(INVENTORY), "--syntax-check",
                              f"{FQCN}.{playbook}"], capture_output=True, text=True, env=env, cwd=installed,
                             timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"ansible_collections/{GALAXY['namespace']}/{GALAXY['name']}/playbooks/{playbook}.yml" in run.stdout


def test_ansible_doc_renders_every_module_and_role_entry_point(installed: Path) -> None:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_NOCOLOR": "1"}
    roles = sorted(p.name for p in (ROOT / "roles").iterdir())
    for kind, names in (("module", ["conntrack", "conntrackd"]), ("role", roles)):
        run = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", kind, "--json", *(f"{FQCN}.{n}" for n in names)],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0 and not run.stderr.strip(), run.stderr
        docs = json.loads(run.stdout)
        assert sorted(docs) == sorted(f"{FQCN}.{n}" for n in names)
        if kind == "role":
            for name in names:
                entries = docs[f"{FQCN}.{name}"]["entry_points"]
                assert "main" in entries and entries["main"].get("options"), name


def test_installed_roles_run_their_verify_step_by_fqcn(installed: Path, tmp_path: Path) -> None:
    playbook = tmp_path / "verify.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "verify from the installed collection", "hosts": "ha_firewalls", "connection": "local",
        "gather_facts": False,
        "tasks": [{"name": "Verify", "ansible.builtin.include_role": {"name": f"{FQCN}.ha_firewall",
                                                                      "tasks_from": "verify.yml"}}]}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_ROLES_PATH": str(installed / "none"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PYTHON_INTERPRETER": str(VENV_BIN / "python")}
    run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(INVENTORY), str(playbook)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert re.search(r"fw-edge-a\s+: ok=\d+ .*failed=0", run.stdout)


def test_wheel_console_scripts_work_from_a_plain_pip_install(artifacts: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a checkout there would stand in for the wheel
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    run = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(artifacts["wheel"])],
                         capture_output=True, text=True, timeout=300, env=plain)
    assert run.returncode == 0, run.stderr
    for script in SCRIPTS:
        run = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path, env=plain)
        assert run.returncode == 0, f"{script} --help: {run.stdout}{run.stderr}"
        assert "Traceback" not in run.stderr
    # A real render outside the checkout: templates and role defaults come from the wheel.
    tool = str(venv / "bin" / "conntrack-tools-render")
    listed = subprocess.run([tool, "-l"], capture_output=True, text=True, check=True, cwd=tmp_path,
                            env=plain).stdout.split()
    assert listed == render.list_templates()
    out = subprocess.run([tool, "conntrack-sysctl.conf.j2", "-r", "conntrack_tools", "-e",
                          "conntrack_tools_nf_conntrack_max=131072"], capture_output=True, text=True, cwd=tmp_path,
                         env=plain)
    assert out.returncode == 0, out.stderr
    expected = render.render("conntrack-sysctl.conf.j2",
                             render.role_defaults("conntrack_tools", {"conntrack_tools_nf_conntrack_max": 131072}))
    assert out.stdout == expected and "131072" in expected
    # The systemd unit has one source, the template: a pip user renders it for the scripts' prefix.
    out = subprocess.run([tool, "conntrackd.service.j2", "-r", "conntrack_tools", "-e", f"conntrack_tools_venv={venv}"],
                         capture_output=True, text=True, cwd=tmp_path, env=plain)
    assert out.returncode == 0, out.stderr
    assert f"ExecStart={venv}/bin/conntrackd -C /etc/conntrackd/conntrackd.conf" in out.stdout


GET_PIP_STANDIN = """# Stand-in for ansible-test's pip bootstrap script, whose download host is unreachable here
# (written by tests/roles/test_collection.py): the venv's own ensurepip installs the bundled pip.
import ensurepip

ensurepip.bootstrap(upgrade=True)
"""


def test_ansible_test_sanity_passes_on_the_installed_artifact(installed: Path) -> None:
    """Every sanity test of the pinned ansible-core, on the artifact as installed (what build_ignore leaves out is
    not scanned), for the Python of the venv (the nodes' Debian 12 has the same 3.11)."""
    root = installed / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    python = ".".join(platform.python_version_tuple()[:2])
    run = _ansible_test(["sanity", "--python", python, "--color", "no"], root)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    assert len(re.findall(r'Running sanity test "', run.stdout + run.stderr)) >= 20


def _ansible_test(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ansible-test (the venv's, pinned with ansible-core); the first run may need the pip bootstrap stand-in
    where its error message says (its download host is unreachable here)."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    for _ in range(2):
        run = subprocess.run([str(VENV_BIN / "ansible-test"), *argv], cwd=cwd, capture_output=True, text=True,
                             env=env, timeout=900)
        wanted = re.search(r"can be manually downloaded and saved to: (\S+)", run.stdout + run.stderr)
        if run.returncode == 0 or not wanted:
            break
        Path(wanted.group(1)).parent.mkdir(parents=True, exist_ok=True)
        Path(wanted.group(1)).write_text(GET_PIP_STANDIN)
    return run


def test_ansible_test_units_pass_for_the_modules(installed: Path, tmp_path: Path) -> None:
    """tests/collection_units/ as the installed collection's tests/unit/, run by ``ansible-test units`` in its own
    venv (pytest, pytest-xdist, pytest-mock from the package index) for the venv's Python."""
    tree = tmp_path / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    shutil.copytree(installed / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"], tree, symlinks=True)
    shutil.copytree(ROOT / "tests" / "collection_units", tree / "tests" / "unit")
    python = ".".join(platform.python_version_tuple()[:2])
    run = _ansible_test(["units", "--venv", "--python", python, "--color", "no", "--requirements"], tree)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    passed = re.search(r"(\d+) passed", out)
    collected = len(re.findall(r"^def test_", "".join(p.read_text() for p in
                                                     (ROOT / "tests" / "collection_units").rglob("test_*.py")), re.M))
    assert passed and int(passed.group(1)) >= collected, out[-3000:]
