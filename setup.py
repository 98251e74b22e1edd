"""Packaging that pyproject.toml cannot say: the checkout's conf/ is installed as the package xentlab.conf.

conf/ stays the one copy of the configs: an editable install maps xentlab.conf onto it, a wheel carries it, and
xentlab-train finds it as Hydra's `pkg://xentlab.conf` either way. Its group folders are data packages.
"""

from pathlib import Path

from setuptools import find_packages, setup

GROUPS = sorted(p.name for p in (Path(__file__).parent / "conf").iterdir() if p.is_dir() and any(p.glob("*.yaml")))

setup(
    # hydra_plugins is a namespace package (Hydra finds sweepers there): find_packages skips it.
    packages=[*find_packages("src"), "hydra_plugins.xentlab_sweeper", "xentlab.conf",
              *(f"xentlab.conf.{group}" for group in GROUPS)],
    package_dir={"": "src", "xentlab.conf": "conf"},
    package_data={"xentlab.conf": ["*.yaml"], **{f"xentlab.conf.{group}": ["*.yaml"] for group in GROUPS}},
)
