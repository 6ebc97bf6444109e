"""The hash of the sources an image holds (shared/ and one folder), as build.sh
labels it (virtbus.source) and the cluster test compares it: a container is
used only when its image holds the sources of this checkout."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path


def source_hash(root: Path, folder: str) -> str:
    digest = hashlib.sha256()
    for top in ("shared", folder):
        for path in sorted((root / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


if __name__ == "__main__":
    print(source_hash(Path(sys.argv[1]), sys.argv[2]))
