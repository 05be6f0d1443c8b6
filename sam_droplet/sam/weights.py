"""Fetch and verify SAM checkpoints (only when asked: the server never downloads anything).

MobileSAM's ``mobile_sam.pt`` comes from the official MobileSAM GitHub repository and is checked
against its published SHA-256. The SAM ViT-B/L/H checkpoints come from Meta's download server and
are checked against the SHA-256 prefix in their file names.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHECKPOINTS", "Checkpoint", "WeightsError", "download", "sha256_of", "verify"]


class WeightsError(Exception):
    """Downloading or verifying a checkpoint failed; the message says what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint: where to get it and the SHA-256 (or its prefix) to expect."""

    model_type: str
    file_name: str
    url: str
    sha256: str

    def matches(self, digest: str) -> bool:
        return digest.startswith(self.sha256)


CHECKPOINTS: dict[str, Checkpoint] = {
    "vit_t": Checkpoint(
        "vit_t",
        "mobile_sam.pt",
        "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
    ),
    "vit_b": Checkpoint(
        "vit_b",
        "sam_vit_b_01ec64.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "01ec64",
    ),
    "vit_l": Checkpoint(
        "vit_l",
        "sam_vit_l_0b3195.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "0b3195",
    ),
    "vit_h": Checkpoint(
        "vit_h",
        "sam_vit_h_4b8939.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "4b8939",
    ),
}


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | Path, model_type: str = "vit_t") -> str:
    """Check a checkpoint file against the published hash; returns its SHA-256.

    Raises:
        WeightsError: the file is missing or its hash differs.
    """
    path = Path(path)
    ref = CHECKPOINTS[model_type]
    if not path.is_file():
        raise WeightsError(f"{path} does not exist: run `sam-droplet weights download` to fetch {ref.file_name}")
    digest = sha256_of(path)
    if not ref.matches(digest):
        raise WeightsError(
            f"{path} has SHA-256 {digest}, but the published {ref.file_name} has {ref.sha256}: "
            "the file is damaged or a different checkpoint; download it again"
        )
    return digest


def download(
    dest: str | Path,
    model_type: str = "vit_t",
    url: str | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download a checkpoint to ``dest`` (a file, or a folder to put the published file name in).

    The file is written next to its destination and renamed into place only after its SHA-256 checked
    out, so an interrupted or corrupted download never leaves a bad checkpoint behind.

    Args:
        dest: target file or folder.
        model_type: which published checkpoint.
        url: override the download address (a mirror).
        expected_sha256: override the expected hash (with a mirror of another file).
        progress: show a tqdm progress bar on stderr.
        timeout: seconds to wait for the server.

    Raises:
        WeightsError: offline, HTTP error, or hash mismatch; the message names the URL to fetch by hand.
    """
    ref = CHECKPOINTS[model_type]
    url = url or ref.url
    expected = expected_sha256 or ref.sha256
    dest = Path(dest)
    if dest.is_dir() or str(dest).endswith(os.sep):
        dest = dest / ref.file_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    by_hand = f"download {url} by hand and save it as {dest}"
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(f"cannot download {ref.file_name}: {reason} (offline?); {by_hand}") from None
    total = int(response.headers.get("Content-Length") or 0) or None
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        from tqdm import tqdm

        with (
            os.fdopen(fd, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=ref.file_name, disable=not progress) as bar,
        ):
            while block := response.read(1 << 16):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        response.close()
        got = digest.hexdigest()
        if not got.startswith(expected):
            raise WeightsError(
                f"downloaded {ref.file_name} has SHA-256 {got}, expected {expected}: the download is damaged "
                f"or the server sent another file; try again or {by_hand}"
            )
        os.replace(tmp_name, dest)
    except (OSError, urllib.error.URLError) as exc:
        raise WeightsError(f"download of {ref.file_name} failed: {exc}; {by_hand}") from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest
