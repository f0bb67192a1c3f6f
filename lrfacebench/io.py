"""File I/O shared by every stage: robust image reading, atomic writes, hashing, checkpoints.

Images in memory are RGB ``uint8`` arrays ``(H,W,3)``; tensors are ``(N,3,H,W)`` float in [0,1].
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import safetensors.torch
import torch
from PIL import Image, ImageOps

from lrfacebench.errors import LrfbError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
MAX_IMAGE_PIXELS = 100_000_000  # refuse decompression bombs above this many pixels
CACHE_ENV = "LRFB_CACHE_DIR"  # root of every derived-data cache (FID features, face landmarks)


class UnreadableImage(LrfbError):
    """Raised when an image file cannot be decoded into RGB pixels; the message says why."""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root`` (case-insensitive extensions), sorted for determinism."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and is_image(p))


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The PIL image of ``path`` with its header read and checked (pixels not decoded yet).

    The one place where image files are judged: a missing, empty, oversized (more than
    :data:`MAX_IMAGE_PIXELS`, or PIL's decompression-bomb limits) or undecodable file -- also
    one that fails while the ``with`` block decodes it -- raises :class:`UnreadableImage`.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableImage("missing file" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise UnreadableImage("zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise UnreadableImage(f"image too large ({im.width}x{im.height} pixels)")
                yield im
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage(f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImage(f"cannot decode: {e}") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode any image to RGB uint8 ``(H,W,3)``.

    Applies EXIF orientation; converts grayscale, palette, CMYK, alpha and 16-bit images.
    Raises :class:`UnreadableImage` for missing, empty, truncated, corrupt or oversized files
    (:func:`open_image`).
    """
    with open_image(path) as im:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # in place: a 48 MP photo is 144 MB a copy
        return _to_rgb8(im)


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8).copy()


def write_png(path: str | Path, rgb: np.ndarray) -> str:
    """Write an RGB uint8 ``(H,W,3)`` array as PNG, atomically; returns the sha256 of the file's bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    data = buf.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return sha256_bytes(data)


def write_png_folder(folder: str | Path, images: torch.Tensor) -> Path:
    """``(N,3,S,S)`` uint8 images as ``folder/000000.png`` ... (face i in file i); returns ``folder``."""
    folder = Path(folder)
    for i, rgb in enumerate(images.permute(0, 2, 3, 1).numpy()):
        write_png(folder / f"{i:06d}.png", np.ascontiguousarray(rgb))
    return folder


def read_png_folder(folder: str | Path) -> torch.Tensor:
    """Inverse of :func:`write_png_folder`: ``(N,3,S,S)`` uint8."""
    rgbs = [read_rgb(f) for f in sorted(Path(folder).glob("*.png"))]
    return torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous()


def cache_dir(name: str) -> Path:
    """``$LRFB_CACHE_DIR/<name>``, else ``~/.cache/lrfacebench/<name>`` (not created here)."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "lrfacebench") / name


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def copy_file(src: str | Path, dest: str | Path) -> None:
    """Copy ``src`` to ``dest`` atomically (contents only)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def sha256_tree(root: str | Path, files: list[Path] | None = None) -> str:
    """Content hash of a folder: sha256 over sorted (relative path, file sha256) pairs."""
    root = Path(root)
    files = sorted(files if files is not None else (p for p in root.rglob("*") if p.is_file()))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save a checkpoint atomically. ``state`` holds only tensors, numbers, strings, lists, dicts."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` (no pickled code is executed)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` (name -> contiguous CPU tensor) and string ``metadata`` as a safetensors
    file, atomically: a format of raw tensor bytes and a JSON header, which cannot hold code."""
    data = safetensors.torch.save(tensors, metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


SAFETENSORS_MAX_HEADER = 1 << 24  # 16 MiB: far above any header of this project's files


def load_tensors(data: bytes, source: str | Path = "data") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of the bytes of a safetensors file, on the CPU.

    Anything else -- a pickle or a ``torch.save`` zip archive above all -- raises
    :class:`LrfbError` naming ``source``; nothing in ``data`` is ever unpickled or executed.
    """
    kind = ("a pickle" if data[:1] == b"\x80" else "a zip archive (torch.save, which holds a pickle)"
            if data[:4] == b"PK\x03\x04" else "")
    if kind:
        raise LrfbError(f"{source} is {kind}, not a safetensors file: refused (pickles can run code)")
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    try:
        if not 0 < n <= min(len(data) - 8, SAFETENSORS_MAX_HEADER):
            raise ValueError(f"header size {n} does not fit a file of {len(data)} bytes")
        metadata = json.loads(data[8:8 + n]).get("__metadata__") or {}
        tensors = safetensors.torch.load(data)
    except Exception as e:  # noqa: BLE001 - the parser's errors vary; all mean "not safetensors"
        raise LrfbError(f"{source} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    return tensors, metadata
