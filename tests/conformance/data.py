"""Where libvirt's conformance data is: ``$VIRTBUS_CONFORMANCE_DIR``, else the
first ``shared/libvirt-conformance`` beside the checkout or one of its parents."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def conformance_dir() -> Path:
    given = os.environ.get("VIRTBUS_CONFORMANCE_DIR")
    if given:
        return Path(given)
    for folder in ROOT.parents:
        candidate = folder / "shared" / "libvirt-conformance"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "libvirt-conformance"
