"""Finding the files of a dataset folder: listing, symlinks followed once, names to subjects.

Nothing here opens an image. A link back to an enclosing folder is a one-line DataError; a file
that a link makes reachable twice is listed twice with the same file_id (files.once keeps one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from bench.data.images import IMAGE_SUFFIXES
from bench.errors import DataError

Problem = tuple[Path, str]  # (file, why it cannot be used)
# <subject>_<n> or <subject>_slice_<n>; lazy, so the shortest subject that fits wins
_NUMBERED = re.compile(r"^(.+?)_(?:slice_?)?\d+$", re.IGNORECASE)


class Found(NamedTuple):
    """A listed file and what identifies its content for the cache key."""

    path: Path
    size: int  # bytes
    mtime_ns: int
    file_id: tuple[int, int]  # (st_dev, st_ino): the same file reached through a link


def require_dir(path: Path | None, where: str) -> Path:
    if path is not None and path.is_symlink() and not path.exists():
        raise DataError(f"{where}: path {path} is a broken symlink or a symlink loop")
    if path is None or not path.exists():
        raise DataError(f"{where}: path {path} does not exist")
    if not path.is_dir():
        raise DataError(f"{where}: {path} is a file; expected a folder")
    return path


def subfolders(root: Path, depth: int) -> list[str]:
    """Relative posix names of the folders exactly `depth` levels below root, sorted."""
    level = [root]
    for _ in range(depth):
        level = [d for parent in level for d in sorted(parent.iterdir()) if d.is_dir()]
    return [d.relative_to(root).as_posix() for d in level]


def require_folders(root: Path, expected: Iterable[str], where: str, depth: int) -> None:
    """DataError naming expected and found folders unless all `expected` exist."""
    expected, found = list(expected), subfolders(root, depth)
    missing = [e for e in expected if e not in found]
    if missing:
        raise DataError(f"{where}: expected folders {', '.join(expected)}; missing "
                        f"{', '.join(missing)}; found: {', '.join(found) or 'none'}")


def _entries(folder: Path) -> list[os.DirEntry]:
    """Entries of a folder sorted by name (os.scandir: one stat per file, no Path objects)."""
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder, following links; False for a broken link or a link loop."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _scan(folder: Path, recursive: bool,
          ancestors: dict[tuple[int, int], str]) -> Iterator[os.DirEntry]:
    """The entries under a folder, sorted; `ancestors` maps the (st_dev, st_ino) of each folder
    on the way down to its path, so a link back up is a DataError instead of endless descent."""
    for entry in _entries(folder):
        if not (recursive and _is_dir(entry)):
            yield entry
            continue
        st = entry.stat()
        if (st.st_dev, st.st_ino) in ancestors:
            raise DataError(f"symlink loop: {entry.path} leads back to "
                            f"{ancestors[st.st_dev, st.st_ino]}; remove or replace that link")
        yield from _scan(Path(entry.path), recursive,
                         {**ancestors, (st.st_dev, st.st_ino): entry.path})


def list_files(folder: Path, accept: Callable[[str], bool], reason: str,
               recursive: bool = False) -> tuple[list[Found], list[Problem]]:
    """(accepted files, rejected entries) of a folder, sorted; rejected gets `reason`, or why it
    cannot be read (a broken link). `accept` sees the lower-cased file name."""
    found, rejected = [], []
    top = os.stat(folder)
    for entry in _scan(folder, recursive, {(top.st_dev, top.st_ino): str(folder)}):
        if _is_dir(entry):
            rejected.append((Path(entry.path), "a folder among the images"))
        elif not accept(entry.name.lower()):
            rejected.append((Path(entry.path), reason))
        else:
            try:
                st = entry.stat()
            except OSError as e:
                rejected.append((Path(entry.path), f"cannot be read: {e.strerror or e}"))
                continue
            found.append(Found(Path(entry.path), st.st_size, st.st_mtime_ns,
                               (st.st_dev, st.st_ino)))
    return found, rejected


def outside(root: Path, expected: Iterable[str], skipped: Callable[[str], bool]) -> list[str]:
    """Entries under root that are neither an `expected` folder (relative posix name), nor on the
    way to one, nor `skipped` (entries the layout documents and does not read): relative
    names, folders ending in "/", sorted."""
    expected = set(expected)
    ways = {e.rsplit("/", i)[0] for e in expected for i in range(1, e.count("/") + 1)}
    strays, todo = [], [(root, "")]
    while todo:
        folder, prefix = todo.pop()
        for entry in _entries(folder):
            name, is_dir = prefix + entry.name, _is_dir(entry)
            if name in expected or skipped(name):
                continue
            if is_dir and name in ways:
                todo.append((Path(entry.path), name + "/"))
            else:
                strays.append(name + "/" if is_dir else name)
    return sorted(strays)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _stem(path: Path) -> str:
    """The name without its extension and a trailing `.nii`."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem[:-4] if stem.lower().endswith(".nii") else stem


def numbered_subject(path: Path) -> str | None:
    """The subject of a file whose stem is `<subject>_<n>` or `<subject>_slice_<n>` with n
    digits, or None for any other name. `218391_78.jpeg` -> `218391`,
    `case_001_slice_0.nii.png` -> `case_001`, `scan.png` -> None."""
    match = _NUMBERED.match(_stem(path))
    return match.group(1) if match else None


def subject_key(path: Path) -> str:
    """The subject of an image file in a layout without a name pattern: its numbered subject
    (see numbered_subject), else the stem itself (one file = one subject). `scan.png` -> `scan`."""
    return numbered_subject(path) or _stem(path)


def by_name(found: list[Found], subject_of: Callable[[Path], str | None]
            ) -> tuple[list[tuple[Found, str]], list[Path]]:
    """([(file, subject)], misnamed paths): `subject_of` gives None for a name outside the
    layout's pattern."""
    named, misnamed = [], []
    for f in found:
        subject = subject_of(f.path)
        if subject is None:
            misnamed.append(f.path)
        else:
            named.append((f, subject))
    return named, misnamed
