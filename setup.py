"""Package layout; the rest of the metadata is in setup.cfg.

templates/, static/ and migrations/ stay at the top of the checkout (where Flask, Alembic and npm
expect them) and are installed inside the package as ``chatapp/templates`` etc., so that an installed
chatapp (``pip install .``, not editable) runs the same as a checkout; ``create_app`` looks in both places.
"""

from setuptools import find_packages, setup

DATA = ("templates", "static", "migrations")

setup(
    packages=find_packages(include=["chatapp", "chatapp.*"]) + [f"chatapp.{name}" for name in DATA],
    package_dir={f"chatapp.{name}": name for name in DATA},
    package_data={
        "chatapp.templates": ["**/*.html"],
        "chatapp.static": ["**/*"],
        "chatapp.migrations": ["alembic.ini", "script.py.mako", "README", "versions/*.py"],
    },
    exclude_package_data={"": ["**/__pycache__/*", "**/*.pyc"]},
)
