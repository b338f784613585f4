"""Where the shipped assets (``data/`` in the repository) live once installed.

``data/`` is installed as the package ``mlff.assets`` (see ``package_dir`` in setup.cfg), so the
assets are found through the installed package, never through the current directory. This works
for editable and regular installs alike.
"""

from __future__ import annotations

from pathlib import Path


def assets_dir() -> Path:
    """Directory of the shipped assets (models/, datasets/, examples/)."""
    from importlib.resources import files

    return Path(str(files("mlff.assets")))


def asset(relative: str) -> Path:
    """Path of one shipped asset, e.g. ``asset("examples/alanine_dipeptide.pdb")``.

    Raises:
        FileNotFoundError: naming the asset and the directory searched.
    """
    path = assets_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"shipped asset {relative!r} not found under {assets_dir()}")
    return path
