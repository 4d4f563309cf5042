"""conf/ and recipes/ live at the top of the repository and ship as toolkit.conf and
toolkit.recipes, so an installed (non-editable) toolkit serves exactly like a checkout."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["toolkit", "toolkit.*"]) + ["toolkit.conf", "toolkit.recipes"],
    package_dir={"toolkit.conf": "conf", "toolkit.recipes": "recipes"},
)
