"""Where the package's installed data (config/, launch/) lives, in every install mode."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "cfgrl_ros"


def share_dir() -> Path:
    """The package's share directory: colcon install, pip install, or the source checkout."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (pip mode)
            pass
    except ImportError:
        pass
    source_tree = Path(__file__).resolve().parents[1]
    if (source_tree / "config").is_dir() and (source_tree / "package.xml").is_file():
        return source_tree  # editable install or running from the checkout
    installed = Path(sys.prefix) / "share" / PACKAGE
    if installed.is_dir():
        return installed
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} share directory (config/, launch/): looked in the ament "
        f"index, {source_tree} and {installed}; reinstall the package"
    )


def file_in_the_way(path: str | Path) -> Path | None:
    """The file among `path`'s parents, if one is there: nothing can be created under it (and
    `path.exists()` is simply False), so commands check before long work."""
    return next((p for p in Path(path).absolute().parents if p.exists() and not p.is_dir()), None)


def config_path(name: str) -> Path:
    """A file in config/, e.g. ``config_path("dsrl_franka.yaml")``."""
    path = share_dir() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"no config file {name!r} in {path.parent}")
    return path
