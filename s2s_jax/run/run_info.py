"""What a run records about itself: resolved config, seed, package versions, git revision."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy", "grain",
    "tensorflow-datasets", "sacrebleu", "sentencepiece",
)  # fmt: skip


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` ("not installed" for the missing ones)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(path: str | Path | None = None) -> str:
    """The source checkout's commit (with ``-dirty`` if it has changes), or "unknown"."""
    cwd = Path(path or Path(__file__).resolve().parent)
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def write_run_info(workdir: str | Path, config: dict[str, Any], extra: dict | None = None) -> None:
    """Writes ``config.json`` (the resolved config) and ``run_info.json`` into ``workdir``."""
    import jax

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    info = {
        "seed": config.get("seed"),
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "devices": [str(d) for d in jax.devices()],
        "command": sys.argv,
        "packages": package_versions(),
        **(extra or {}),
    }
    (workdir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
