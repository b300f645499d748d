"""What the file-based kinds share: subject splits, bad-file reports, threaded decoding.

A layout module (oasis, adni, folder, nifti) finds its files with `listing` and says which file
goes to which split, subject and label; everything from identity to assembled uint8 splits
happens here, the same way. Nothing is dropped without a word: files that cannot be used are an
error (or, with skip_bad, a note naming them); entries outside the layout, files reached twice
through links and classes missing from a split are notes.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bench.data.base import SPLITS, DataConfig, Split, class_counts
from bench.data.images import Decoded
from bench.data.listing import Found, Problem
from bench.data.plan import Built, Plan, Progress, require_nonempty, seeded_rank
from bench.errors import DataError

Decoder = Callable[[Path, int], Decoded]
LISTED = 20  # files named in an error or note; the count is always complete
ADVANCE_EVERY = 64  # decoded files per progress update


@dataclass(frozen=True)
class Source:
    path: Path
    split: str  # one of SPLITS
    subject: str  # no subject is in two splits
    label: int = -1  # index into Layout.label_names, -1 when unlabelled
    size: int = 0  # bytes, with mtime_ns the file's identity in the cache key
    mtime_ns: int = 0
    file_id: tuple[int, int] | None = None  # (st_dev, st_ino), not in the cache key

    @classmethod
    def of(cls, found: Found, split: str, subject: str, label: int = -1) -> "Source":
        return cls(found.path, split, subject, label, found.size, found.mtime_ns, found.file_id)


@dataclass(frozen=True)
class Layout:
    """A scanned dataset folder: no file has been opened yet."""

    where: str  # the spec, for messages
    root: Path
    sources: tuple[Source, ...]
    rejected: tuple[Problem, ...] = ()  # non-image files, folders, broken links among the images
    misnamed: tuple[Path, ...] = ()  # images whose name does not fit `pattern`: never guessed
    pattern: str = ""  # the file names a layout with subjects in its names requires
    label_names: tuple[str, ...] = ()
    one_size: bool = False  # the layout promises a single image size
    notes: tuple[str, ...] = ()
    hint: str = "add images of that split"  # what to do about an empty split


def ignored_note(strays: list[str], where: str) -> tuple[str, ...]:
    """The note naming entries outside a layout, or () when there are none."""
    if not strays:
        return ()
    return (f"{where}: ignored {len(strays)} entries outside the layout: "
            f"{enumerate_some(strays, ', ')}",)


def share(n: int, fraction: float) -> int:
    """How many of n subjects a fraction takes: at least one when it is positive."""
    return 0 if fraction <= 0 or n == 0 else min(n, max(1, round(n * fraction)))


def ranked(subjects: Iterable[str], seed: int) -> list[str]:
    """Distinct subjects in a seeded, stable pseudo-random order (a seeded hash of each key)."""
    return sorted(set(subjects), key=lambda s: seeded_rank(s, seed))


def hash_split(subjects: Iterable[str], config: DataConfig) -> dict[str, str]:
    """subject -> split: the first test_fraction of the seeded ranking is test, the next
    val_fraction is val, the rest train."""
    order = ranked(subjects, config.seed)
    n_test, n_val = share(len(order), config.test_fraction), share(len(order), config.val_fraction)
    return {s: "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for i, s in enumerate(order)}


def check_subjects(sources: Iterable[Source], where: str, label_names: tuple[str, ...]) -> None:
    """DataError when a subject is in two splits or carries two labels."""
    splits, labels, example = defaultdict(set), defaultdict(set), {}
    for s in sources:
        splits[s.subject].add(s.split)
        labels[s.subject].add(s.label)
        example.setdefault((s.subject, s.split, s.label), s.path)
    for subject in splits:
        for what, seen in (("splits", splits[subject]), ("labels", labels[subject])):
            if len(seen) > 1:
                paths = [str(p) for (subj, _, _), p in example.items() if subj == subject]
                names = sorted(label_names[v] if what == "labels" else v for v in seen)
                raise DataError(f"{where}: subject {subject!r} is in two {what} "
                                f"({', '.join(names)}): {', '.join(paths[:4])}")


def enumerate_some(items: list[str], sep: str) -> str:
    """The first LISTED items joined by `sep`, then how many more there are."""
    more = f"{sep}and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return sep.join(items[:LISTED]) + more


def report_bad(problems: list[Problem], what: str, where: str, skip_bad: bool) -> tuple[str, ...]:
    """Raise a one-line DataError naming the files, or (skip_bad) a note counting and listing
    them. Nothing is dropped without a word. A problem with an empty reason is just its path."""
    if not problems:
        return ()
    listed = enumerate_some([f"{p} ({why})" if why else str(p) for p, why in problems], "; ")
    if not skip_bad:
        raise DataError(f"{len(problems)} {what} in {where}: {listed}; "
                        f"remove or fix them, or pass --skip-bad to skip them")
    return (f"skipped {len(problems)} {what}: {listed}",)


def once(layout: Layout) -> tuple[tuple[Source, ...], tuple[str, ...]]:
    """(sources, note): a file reached by two paths (a symlink or a hard link) is kept at its
    first path and the repeats named in a note; a DataError when its paths put it in two
    splits or under two labels."""
    def place(s: Source) -> str:
        return f"{s.split}/{layout.label_names[s.label]}" if layout.label_names else s.split

    first: dict[tuple[int, int], Source] = {}
    kept, repeats = [], []
    for s in layout.sources:
        seen = first.setdefault(s.file_id, s) if s.file_id is not None else s
        if seen is s:
            kept.append(s)
        elif place(seen) == place(s):
            repeats.append(f"{s.path} (= {seen.path})")
        else:
            raise DataError(f"{layout.where}: {s.path} and {seen.path} are one file (a link) in "
                            f"{place(s)} and {place(seen)}; remove one of them")
    note = (f"{layout.where}: counted once {len(repeats)} files reached by a second path "
            f"(a link): {enumerate_some(repeats, '; ')}",) if repeats else ()
    return tuple(kept), note


def missing_classes(splits: dict[str, Split], label_names: tuple[str, ...],
                    where: str) -> tuple[str, ...]:
    """A note for each class that has no images in some split."""
    counts = {name: class_counts(split, label_names) for name, split in splits.items()}
    notes = []
    for label in label_names:
        empty = [name for name in SPLITS if counts[name][label] == 0]
        if empty:
            notes.append(f"{where}: class {label} has no images in {', '.join(empty)}")
    return tuple(notes)


def identity(layout: Layout) -> dict:
    """What the cache key needs: every file's size and mtime, and where it went."""
    start = len(str(layout.root)) + 1  # listed paths are root-joined strings
    rows = [[str(s.path)[start:], s.size, s.mtime_ns, s.split, s.subject, s.label]
            for s in layout.sources]
    return {"files": rows, "labels": list(layout.label_names), "one_size": layout.one_size}


def decode_all(sources: tuple[Source, ...], decode: Decoder, resolution: int,
               progress: Progress | None, description: str) -> list[Decoded | str]:
    """Decode every source in a thread pool (PIL and numpy release the GIL). A file that fails
    gives its one-line reason instead of a Decoded."""
    def one(source: Source) -> Decoded | str:
        try:
            return decode(source.path, resolution)
        except Exception as e:  # noqa: BLE001 - any decoder failure is reported per file
            return " ".join(f"{type(e).__name__}: {e}".split())

    if progress is not None:
        progress.start(description, len(sources))
    results: list[Decoded | str] = []
    try:
        with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
            for result in pool.map(one, sources, chunksize=16):
                results.append(result)
                if progress is not None and len(results) % ADVANCE_EVERY == 0:
                    progress.advance(ADVANCE_EVERY)
        if progress is not None:
            progress.advance(len(results) % ADVANCE_EVERY)
    finally:
        if progress is not None:
            progress.stop()
    return results


def _size_problems(decoded: list[tuple[Source, Decoded]]) -> list[Problem]:
    sizes = Counter(d.size for _, d in decoded)
    if len(sizes) <= 1:
        return []
    common = "x".join(map(str, sizes.most_common(1)[0][0]))
    return [(s.path, f"{'x'.join(map(str, d.size))}, expected {common} like "
                     f"{sizes.most_common(1)[0][1]} others") for s, d in decoded
            if d.size != sizes.most_common(1)[0][0]]


def _conversion_notes(decoded: list[tuple[Source, Decoded]], where: str) -> tuple[str, ...]:
    found = defaultdict(list)
    for s, d in decoded:
        if d.conversion:
            found[d.conversion].append(s.path)
    return tuple(f"{where}: converted {len(paths)} images {conversion}, e.g. {paths[0]}"
                 for conversion, paths in sorted(found.items()))


def assemble(decoded: list[tuple[Source, Decoded]], labelled: bool) -> dict[str, Split]:
    """Stack the decoded images of each split, subjects and labels repeated per image."""
    splits = {}
    for name in SPLITS:
        mine = [(s, d) for s, d in decoded if s.split == name]
        images = [d.images for _, d in mine]
        counts = [len(d.images) for _, d in mine]
        subjects = np.repeat(np.asarray([s.subject for s, _ in mine], dtype=str), counts)
        labels = np.repeat(np.asarray([s.label for s, _ in mine], np.int64), counts)
        stacked = np.concatenate(images) if images else np.zeros((0, 1, 1), np.uint8)
        splits[name] = Split(stacked, subjects, labels if labelled else None)
    return splits


def build(layout: Layout, config: DataConfig, decode: Decoder,
          progress: Progress | None) -> Built:
    """Decode, validate, assemble: the cache miss path of every file-based kind."""
    results = decode_all(layout.sources, decode, config.resolution, progress,
                         f"decoding {layout.where}")
    unreadable = [(s.path, r) for s, r in zip(layout.sources, results) if isinstance(r, str)]
    notes = report_bad(unreadable, "unusable files", layout.where, config.skip_bad)
    decoded = [(s, r) for s, r in zip(layout.sources, results) if not isinstance(r, str)]
    if layout.one_size:
        odd = _size_problems(decoded)
        notes += report_bad(odd, "images of another size", layout.where, config.skip_bad)
        decoded = [(s, d) for s, d in decoded if s.path not in {p for p, _ in odd}]
    splits = assemble(decoded, labelled=bool(layout.label_names))
    require_nonempty({k: len(v) for k, v in splits.items()}, layout.where,
                     "all of its files were skipped")
    notes += missing_classes(splits, layout.label_names, layout.where)
    return Built(splits, layout.label_names, notes + _conversion_notes(decoded, layout.where))


def plan(layout: Layout, config: DataConfig, decode: Decoder) -> Plan:
    """The Plan of a scanned layout: checks that need no decoding happen here, before the cache."""
    notes = layout.notes + report_bad(list(layout.rejected), "unusable entries", layout.where,
                                      config.skip_bad)
    notes += report_bad([(p, "") for p in layout.misnamed], f"files not named {layout.pattern}",
                        layout.where, config.skip_bad)
    sources, repeats = once(layout)
    layout = replace(layout, sources=sources)
    check_subjects(layout.sources, layout.where, layout.label_names)
    require_nonempty(Counter(s.split for s in layout.sources), layout.where, layout.hint)
    return Plan(identity(layout), lambda progress: build(layout, config, decode, progress),
                notes + repeats)
