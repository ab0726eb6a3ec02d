"""Build hooks that pyproject.toml cannot express.

* The version comes from galaxy.yml, the project's one version source (collection, package, role default).
* The wheel carries what ``conntrack_tools.render`` needs outside a checkout: ``templates/*.j2`` and
  ``roles/*/defaults/main.yml`` are copied into ``conntrack_tools/_data/`` at build time, so ``templates/``
  stays the one source of truth in the repository.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def galaxy_version() -> str:
    match = re.search(r"^version:\s*['\"]?([^'\"\s#]+)", (HERE / "galaxy.yml").read_text(), re.M)
    if not match:
        raise SystemExit("galaxy.yml has no version")
    return match.group(1)


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        data = Path(self.build_lib) / "conntrack_tools" / "_data"
        if data.exists():
            shutil.rmtree(data)
        (data / "templates").mkdir(parents=True)
        for template in sorted((HERE / "templates").glob("*.j2")):
            shutil.copyfile(template, data / "templates" / template.name)
        for defaults in sorted((HERE / "roles").glob("*/defaults/main.yml")):
            target = data / "roles" / defaults.parent.parent.name / "defaults" / "main.yml"
            target.parent.mkdir(parents=True)
            shutil.copyfile(defaults, target)


setup(version=galaxy_version(), cmdclass={"build_py": BuildPyWithData})
