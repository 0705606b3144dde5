"""Built images and buildah containers of them, for the image tests (fixtures in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_DIR = Path(os.environ.get("KFLOW_CACHE_DIR", Path.home() / ".cache" / "kflow"))
BUILDAH = [
    "buildah",
    "--root", str(CACHE_DIR / "buildah" / "root"),
    "--runroot", str(CACHE_DIR / "buildah" / "run"),
    "--storage-driver", "vfs",
]
NAMES = ("runner", "operator", "examples")


def buildah(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*BUILDAH, *args], input=input, capture_output=True, text=True,
                          timeout=300, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Image:
    """One built image: its OCI archive (the build cache, what the cluster imports)."""

    name: str
    archive: Path

    def _blob(self, tar: tarfile.TarFile, digest: str) -> Any:
        member = tar.extractfile("blobs/" + digest.replace(":", "/", 1))
        assert member is not None, f"{self.archive} has no blob {digest}"
        return json.load(member)

    def _index_and_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        with tarfile.open(self.archive) as tar:
            member = tar.extractfile("index.json")
            assert member is not None
            index = json.load(member)
            manifest = self._blob(tar, index["manifests"][0]["digest"])
            return index, self._blob(tar, manifest["config"]["digest"])

    @property
    def ref_name(self) -> str:
        """The name the archive gives the image (what `ctr images import` creates)."""
        index, _ = self._index_and_config()
        return str(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])

    @property
    def config(self) -> dict[str, Any]:
        """The image config (`config` of the OCI image configuration: User, Entrypoint, ...)."""
        _, config = self._index_and_config()
        return dict(config["config"])


class Container:
    """A buildah working container of an image; `run` executes a command in it."""

    def __init__(self, cid: str) -> None:
        self.cid = cid

    def run(self, *argv: str, user: str | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        opts = ["--isolation", "chroot"]
        if user is not None:
            opts += ["--user", user]
        for key, value in (env or {}).items():
            opts += ["--env", f"{key}={value}"]
        proc = subprocess.run([*BUILDAH, "run", *opts, self.cid, "--", *argv],
                              capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} in {self.cid} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc
