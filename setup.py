"""Package discovery lives in pyproject.toml; this file only maps the top-level weights/ folder
into wheels as the package data `vsegcli._weights`, so a wheel or index install runs the same
shipped default model as a checkout (pyproject's setuptools table cannot mix `find` with a
mapped package)."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vsegcli*"]) + ["vsegcli._weights"],
    package_dir={"vsegcli._weights": "weights"},
)
