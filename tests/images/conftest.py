"""Image tests: the runner, operator and examples images as build-images.sh builds them.

The images are built with the real tools (or taken from the archive cache when the sources did
not change) and run with `buildah run` in the build's own vfs store, so the tests need root
and buildah, like the cluster (hence the `cluster` marker); one of them runs a pod in it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from kflow.devkit.cluster import run_script
from tests.images.support import BUILDAH, CACHE_DIR, NAMES, Container, Image, buildah


@pytest.fixture(scope="session")
def images() -> dict[str, Image]:
    """runner, operator and examples, built now or found in the cache (seconds then)."""
    proc = run_script("build-images.sh", *NAMES)
    if proc.returncode != 0:
        pytest.fail(f"build-images.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    return {name: Image(name, (CACHE_DIR / "images" / f"current-{name}.tar").resolve())
            for name in NAMES}


@pytest.fixture(scope="session")
def containers(images: dict[str, Image]) -> Iterator[dict[str, Container]]:
    """One working container per image, made from its archive and removed at the end.

    The archive's image is normally still in the store (build-images.sh keeps the newest), so
    taking it from the archive reuses what is there.
    """
    made: dict[str, Container] = {}
    try:
        for name, image in images.items():
            cid = f"kflow-test-{name}-{uuid.uuid4().hex[:8]}"
            buildah("from", "--quiet", "--name", cid, f"oci-archive:{image.archive}")
            made[name] = Container(cid)
        yield made
    finally:
        for container in made.values():
            subprocess.run([*BUILDAH, "rm", container.cid], capture_output=True, check=False)
