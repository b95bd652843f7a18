"""Where charlm may write on a user's word: the one check of every path a command writes (--html, --out).

The rule, for a file (a page or a plot):
- it is a regular file or nothing: a folder, device, FIFO or socket is refused, and so is a symbolic link to
  one, to nothing or in a loop. A link to a regular file is followed, and the file it points to is checked
  and replaced (the link stays): that is what the user named, as with the shell's `>`; replacing the link
  instead would leave it dangling from the user's file, and checking only the link would let it lead into a
  run folder;
- it is never inside a folder charlm owns: a run folder (rundir's marker run.json, or a run from before
  markers: config.yaml beside last.pt or best.pt) or a model folder (model_dir's files, recognised by their
  format); `charlm plot` alone writes there, its loss.png straight inside a run folder;
- an existing file is replaced only if charlm wrote it (a page carries GENERATOR_TAG in its first bytes, a
  plot the PNG text GENERATOR_PNG: checked in the first SNIFF bytes), if it is empty (nothing to lose), or
  with --force;
- it is checked before any work, and again right before the publish (an atomic rename, fsio).
A folder (export --out) must be new or empty, a real folder (not a link), and not inside a folder charlm owns.
Nothing here imports torch: `charlm plot` checks its target too.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from charlm.errors import UsageError
from charlm.files import fsio
from charlm.store.layout import BEST, CONFIG, LAST, MARKER, MARKER_FORMAT

GENERATOR_TAG = '<meta name="generator" content="charlm">'  # in each page template, in its first lines
GENERATOR_PNG = b"tEXtSoftware\x00charlm"  # the PNG text chunk of `charlm plot` (before the image data)
SNIFF = 4096  # bytes of an existing file read to recognise it: a bounded read, whatever the file
PLOT_NAME = "loss.png"  # `charlm plot`'s default, inside the run folder
# the model folder's layout (model_dir reads and writes it; defined here, where no torch is imported)
MODEL_FORMAT, MODEL_CONFIG, MODEL_WEIGHTS = "charlm-model", "config.json", "model.safetensors"
CONFIG_LIMIT = 1 << 20  # a model's config.json is a few kB: a bigger one is not read to find its format


def check_output_file(
    path: Path | str, *, option: str, force: bool = False, plot: bool = False, reads: Iterable[Path | str | None] = ()
) -> Path:
    """The file to write for `option` (e.g. "--html"): `path`, or the regular file a link at `path` points
    to. Refused in one line (UsageError) as the module docstring says; `reads`: input files of the same
    command, which the output must not replace; `plot`: the target of `charlm plot`."""
    path = Path(path)
    real = _follow(path, option)
    mode = _mode(real)
    if mode is not None and stat.S_ISDIR(mode):
        example = path / ("plot.png" if plot else "page.html")
        raise UsageError(f"{option} {path} is a folder: pass a file name, e.g. {example}")
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{option} {path} is {_kind(mode)}, not a regular file: pass the path of a file to write")
    _check_folder(real.parent, path, option)
    folder = Path(os.path.realpath(real.parent))
    owner = owning_folder(folder)
    if owner is not None and not (plot and real.name == PLOT_NAME and owner == ("run", folder)):
        raise UsageError(
            f"{option} {path} is inside the {owner[0]} folder {owner[1]}, whose files are charlm's: "
            "write it outside that folder"
        )
    for source in reads:
        if source is not None and mode is not None and _same_file(real, Path(source)):
            raise UsageError(f"{option} {path} is the file this command reads ({source}): write to another path")
    if mode is not None and not force and not written_by_charlm(real):
        raise UsageError(
            f"{option} {path} exists and charlm did not write it: pass --force to replace it, or choose another path"
        )
    return real


def write_output_file(path: Path, data: bytes, *, option: str, force: bool = False, plot: bool = False) -> None:
    """Check `path` again (the work in between may have taken long) and publish `data` there atomically."""
    fsio.atomic_write_bytes(check_output_file(path, option=option, force=force, plot=plot), data)


def check_output_folder(path: Path | str, *, option: str = "--out") -> Path:
    """A folder to create whole (export --out): new, or an empty real folder; not inside a folder charlm
    owns; below an existing folder (missing folders above it are created)."""
    path = Path(path)
    if stat.S_ISLNK(_mode(path, follow=False) or 0):
        raise UsageError(f"{option} {path} is a symbolic link: pass the path of a new folder")
    mode = _mode(path)
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(
            f"{option} {path} already exists and is not a folder: choose a new {option} "
            "(an export never overwrites anything)"
        )
    if mode is not None and any(os.scandir(path)):
        raise UsageError(f"{option} {path} already exists: choose a new {option} (an export never overwrites a folder)")
    above = _nearest_existing(path.absolute().parent)
    if not above.is_dir():
        raise UsageError(f"{option} {path}: {above} is not a folder: choose another {option}")
    owner = owning_folder(Path(os.path.realpath(above)))
    if owner is not None:
        raise UsageError(
            f"{option} {path} is inside the {owner[0]} folder {owner[1]}, whose files are charlm's: "
            "write it outside that folder"
        )
    if not os.access(above, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: folder {above} is not writable: choose another {option}")
    return path


def check_apart(path: Path | str, folder: Path | str, *, option: str, folder_option: str) -> None:
    """Refuse a file to write inside (or at) the folder that the same command creates."""
    file, created = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    if file == created or created in file.parents:
        raise UsageError(
            f"{option} {path} is inside {folder_option} {folder}, the model folder this export "
            f"creates (charlm's files only): write it beside that folder"
        )


def owning_folder(folder: Path) -> tuple[str, Path] | None:
    """("run" | "model", that folder) when `folder` (absolute, links resolved) or a folder above it is one
    charlm owns."""
    for candidate in (folder, *folder.parents):
        if _is_run_folder(candidate):
            return "run", candidate
        if _is_model_folder(candidate):
            return "model", candidate
    return None


def written_by_charlm(path: Path) -> bool:
    """Whether `path` (a regular file) is a page or plot charlm wrote, or empty: its first SNIFF bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF)
    except OSError:
        return False
    return not head or GENERATOR_TAG.encode() in head or (head.startswith(b"\x89PNG") and GENERATOR_PNG in head)


def _follow(path: Path, option: str) -> Path:
    """`path`, or the file its link points to (links of links followed); a dangling link or a loop is refused."""
    if not stat.S_ISLNK(_mode(path, follow=False) or 0):
        return path
    real = Path(os.path.realpath(path))
    try:
        real.stat()
    except OSError as e:
        why = "in a loop" if e.errno == errno.ELOOP else f"to {real}, which does not exist"
        raise UsageError(f"{option} {path} is a symbolic link {why}: remove the link or choose another path") from None
    return real


def _mode(path: Path, *, follow: bool = True) -> int | None:
    """The file type and mode of `path` (None: nothing there); an unusable path (a file on the way, a name too
    long, no permission) is refused in one line."""
    try:
        return (path.stat() if follow else path.lstat()).st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise UsageError(f"cannot use {path}: part of its path is a file, not a folder: choose another path") from None
    except OSError as e:
        raise UsageError(f"cannot use {path} ({e.strerror or e}): choose another path") from None


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _check_folder(folder: Path, path: Path, option: str) -> None:
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist: create it or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: folder {folder} is not writable: choose another path")


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_run_folder(folder: Path) -> bool:
    """run.json of format charlm-run (read only when it is a small regular file), or a run from before markers."""
    return _json_format(folder / MARKER) == MARKER_FORMAT or (
        (folder / CONFIG).is_file() and any((folder / name).is_file() for name in (LAST, BEST))
    )


def _is_model_folder(folder: Path) -> bool:
    """config.json of format charlm-model, or model.safetensors whose metadata says so (config.json lost)."""
    if _json_format(folder / MODEL_CONFIG) == MODEL_FORMAT:
        return True
    try:
        return _safetensors_format(folder / MODEL_WEIGHTS) == MODEL_FORMAT
    except (OSError, ValueError):
        return False


def _json_format(path: Path) -> object:
    """The "format" of a small JSON file (a regular file under CONFIG_LIMIT: never a FIFO or a huge one)."""
    try:
        if not path.is_file() or path.stat().st_size > CONFIG_LIMIT:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def _safetensors_format(path: Path) -> str | None:
    """The "format" of a safetensors file's metadata (its header: 8 bytes of length, then JSON)."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= CONFIG_LIMIT:
            return None
        header = json.loads(f.read(size))
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata.get("format") if isinstance(metadata, dict) else None
