"""`pip install` of the built wheel puts exactly one top-level package, `pagedserve`, into
site-packages (plus its dist-info): no generic names such as `proto` or `kernels` that would
overwrite other distributions' files."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _site_packages(env_dir: Path) -> Path:
    found = list(env_dir.glob("lib/python*/site-packages"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_wheel_installs_only_the_pagedserve_package(tmp_path):
    wheel_dir = tmp_path / "wheel"
    # No build isolation: the test environment already has setuptools (test extra), so no download.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(ROOT)], check=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (wheel,) = wheel_dir.glob("pagedserve-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    site = _site_packages(env_dir)
    before = {p.name for p in site.iterdir()}
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    added = {p.name for p in site.iterdir()} - before - {"__pycache__"}

    dist_infos = {name for name in added if name.endswith(".dist-info")}
    assert len(dist_infos) == 1 and next(iter(dist_infos)).startswith("pagedserve-")
    assert added - dist_infos == {"pagedserve"}
    # The package data the server needs at run time came along.
    assert (site / "pagedserve" / "service" / "grafana_dashboard.json").is_file()
    assert (site / "pagedserve" / "proto" / "pagedserve" / "v1" / "pagedserve.proto").is_file()
    assert (site / "pagedserve" / "loadtest" / "data" / "grounded" / "tasks.json").is_file()


def test_package_data_ships_every_prompt_set_file():
    """pyproject's package-data globs (as setuptools expands them, relative to the package) take
    every file under pagedserve/loadtest/data/: the prompt sets and their README. A cheap check
    of what the slow wheel test above installs."""
    import glob

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package_dir = ROOT / "pagedserve" / "loadtest"
    shipped = {path for pattern in package_data["pagedserve.loadtest"]
               for path in glob.glob(pattern, root_dir=package_dir) if (package_dir / path).is_file()}
    data_files = {str(p.relative_to(package_dir)) for p in (package_dir / "data").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts}
    assert "data/grounded/tasks.json" in data_files and "data/free_chat/questions.txt" in data_files
    assert data_files <= shipped, sorted(data_files - shipped)
