"""Which packages the wheel carries (all else is in pyproject.toml).

Packages are found, not listed, so a new package cannot be left out of the wheel:
everything named ``callrouter*`` under the checkout, plus Alembic's scripts, which
live at the top level (``migrations/``) and are installed inside the package as
``callrouter.migrations`` (the mapping is ``package-dir`` in pyproject.toml).
pyproject.toml cannot say this alone: ``[tool.setuptools.packages.find]`` only
finds packages under their own directory names, so it never finds
``callrouter.migrations`` and the wheel went out without the migrations.
tests/e2e/test_wheel.py builds the wheel and checks that it carries every module.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["callrouter", "callrouter.*"]),
        *(f"callrouter.{name}" for name in find_packages(include=["migrations*"])),
    ]
)
