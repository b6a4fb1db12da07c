"""Ryu 4.34's own `ryu/app/*.py` files for tests, fetched from the release, never committed.

See tests/fixtures/ryu_4_34/README.md for where they come from and how "unmodified" is checked.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMS = ROOT / "tests" / "fixtures" / "ryu_4_34" / "SHA256SUMS"
SDIST = "ryu-4.34.tar.gz"
CACHE = Path(os.environ.get("PICLOUD_RYU_CACHE", "/var/cache/picloud/ryu-4.34"))


def checksums() -> dict[str, str]:
    """name -> sha256 from SHA256SUMS (the sdist, and ryu/app/NAME.py)."""
    sums = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name] = digest
    return sums


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sdist() -> Path:
    """The release's sdist, downloaded once per machine; pytest.skip when pip cannot get it (under
    CI that skip fails the run: a missing component)."""
    path = CACHE / SDIST
    want = checksums()[SDIST]
    if path.is_file() and _sha256(path.read_bytes()) == want:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    constraint = CACHE / "build-constraint.txt"
    constraint.write_text("setuptools<58\n")  # Ryu 4.34's setup.py predates setuptools 58
    done = subprocess.run([sys.executable, "-m", "pip", "download", "ryu==4.34", "--no-deps",
                           "--build-constraint", str(constraint), "-d", str(CACHE), "-q"],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not path.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"needs Ryu 4.34's files: 'pip download ryu==4.34' failed ({last})")
    got = _sha256(path.read_bytes())
    assert got == want, f"{path}: sha256 {got}, SHA256SUMS says {want} (not Ryu 4.34's release)"
    return path


def app_files(into: Path) -> Path:
    """Unpack Ryu 4.34's ryu/app/*.py into `into`, each checked against SHA256SUMS; the directory."""
    sums = checksums()
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist()) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) != 4 or parts[1:3] != ("ryu", "app") or not parts[3].endswith(".py"):
                continue
            source = tar.extractfile(member)
            assert source is not None
            data = source.read()
            name = f"ryu/app/{parts[3]}"
            assert _sha256(data) == sums[name], f"{name}: not the file of Ryu 4.34's release"
            (into / parts[3]).write_bytes(data)
    return into
