"""The artefact store: the one owner of the results folder.

Layout under the results root (every artefact is a folder named by its content key):

    data/<key>/         decoded uint8 splits of one dataset at one preprocessing
    backbones/<key>/    a trained, frozen VQ-VAE
    exports/<key>/      the code grids of every split under one backbone
    extractors/<key>/   a trained feature extractor
    scores/<key>/       small derived numbers (memorisation threshold, backbone scores)
    fits/<name>/        one fitted prior (weights + fit.json: summary, curves, test bits/code)
    runs/<name>/        one scored prior run (a fit's samples and scores) or reference row
    superseded/runs/    records of an older scoring definition, moved there by `bench migrate`
    sweeps/<time-id>/   the submitit job files and logs of one `bench sweep`
    .staging/ .aside/ .partial/ .locks/   work in progress: never read as finished

One key function (`artefact_key`) names everything an artefact depends on. One way to make an
artefact (`Store.get_or_build`): under a per-artefact file lock, reuse a verified finished copy
or build into a hidden staging folder, write a manifest with the sha256 of every file last, and
commit by rename. A replacement (`force`) moves the old version aside and removes it only after
the new one is in place; a kill between the two renames is undone on the next visit. Reading
verifies every file against the manifest. Long builds checkpoint into `.partial/` through
`StoreCheckpoint` and resume from it; the checkpoint is removed when the artefact commits.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.errors import ArtefactError, BenchError

STORE_FORMAT = 1  # bump when the layout or a manifest field changes meaning
MANIFEST = "MANIFEST.json"
KINDS = ("data", "backbones", "exports", "extractors", "scores", "fits", "runs")
HIDDEN = (".staging", ".aside", ".partial", ".locks")
T = TypeVar("T")


def artefact_key(kind: str, deps: Any) -> str:
    """The content key of an artefact: sha256 of its kind and everything it depends on."""
    if kind not in KINDS:
        raise ValueError(f"unknown artefact kind {kind!r}; kinds: {', '.join(KINDS)}")
    text = json.dumps({"kind": kind, "store": STORE_FORMAT, "deps": deps}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Artefact:
    """One artefact: its kind, full content key and folder name under `root/kind/`."""

    kind: str
    key: str  # full hex content key
    deps: dict[str, Any] = field(default_factory=dict, compare=False)  # recorded in the manifest
    name: str = ""  # folder name; default: the first 16 hex digits of the key

    @classmethod
    def of(cls, kind: str, deps: dict[str, Any], *, prefix: str = "", digits: int = 16) -> "Artefact":
        key = artefact_key(kind, deps)
        return cls(kind, key, deps, f"{prefix}{key[:digits]}")

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


# --- atomic files -----------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a temporary file beside `path`, fsync it and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    """JSON from `path`; a missing or undecodable file is an ArtefactError naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtefactError(f"missing {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtefactError(f"unreadable JSON {path}: {e}") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file (inside a staging folder: the store commits it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file; missing or unreadable is an ArtefactError naming it."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ArtefactError(f"missing {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtefactError(f"unreadable tensors {path}: {e}") from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def is_disk_full(e: BaseException) -> bool:
    """A full disk (or quota) as raised by Python, numpy or safetensors."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()
    return "no space left" in text or "disk quota" in text


@contextlib.contextmanager
def disk_errors(what: str, folder: Path) -> Iterator[None]:
    """Turn a full disk while writing `what` into one line naming the folder."""
    try:
        yield
    except Exception as e:
        if is_disk_full(e):
            raise BenchError(f"no space left on the device while writing {what} into {folder}; "
                             f"free some space and run the same command again (nothing "
                             f"half-written was kept)") from None
        raise


def prepare_out(out: Path) -> Path:
    """Create a writable output folder, or one line saying why it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"cannot create or write the output folder {out}: "
                         f"{e.strerror or e}") from None
    return out


# --- the store --------------------------------------------------------------------------------


class Store:
    """The results folder. `say` receives progress notes (waiting on a lock, cleaning up)."""

    def __init__(self, root: Path, *, say: Callable[[str], None] = lambda _: None,
                 writer: bool = True) -> None:
        self.root = Path(root)
        self.say = say
        self.writer = writer  # False on DDP ranks > 0: they read what rank 0 commits

    def prepare(self) -> "Store":
        """Create the root (one-line error if it cannot be written)."""
        prepare_out(self.root)
        for sub in HIDDEN:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    # paths
    def dir(self, art: Artefact) -> Path:
        return self.root / art.kind / art.name

    def _hidden(self, sub: str, art: Artefact) -> Path:
        return self.root / sub / f"{art.kind}--{art.name}"

    def exists(self, art: Artefact) -> bool:
        return (self.dir(art) / MANIFEST).is_file()

    # locking
    @contextlib.contextmanager
    def lock(self, art: Artefact) -> Iterator[None]:
        """Hold the artefact's lock; say so when another process holds it and wait."""
        path = self._hidden(".locks", art).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            self.say(f"waiting for {art.label}: another process is building it")
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # reading
    def verify(self, art: Artefact) -> dict[str, Any]:
        return self.verify_dir(self.dir(art))

    def verify_dir(self, directory: Path) -> dict[str, Any]:
        """Check every file of a finished artefact against its manifest; return the manifest."""
        manifest = read_json(directory / MANIFEST)
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict):
            raise ArtefactError(f"{directory / MANIFEST} lists no files; {self.rebuild_hint()}")
        for name, digest in files.items():
            path = directory / name
            if not path.is_file():
                raise ArtefactError(f"{path} is missing from a finished artefact; "
                                    f"{self.rebuild_hint()}")
            if file_sha256(path) != digest:
                raise ArtefactError(f"{path} fails its sha256 check (changed or corrupt on disk); "
                                    f"{self.rebuild_hint()}")
        return manifest

    @staticmethod
    def rebuild_hint() -> str:
        return "run the same command again with --force to rebuild it"

    def read(self, art: Artefact, load: Callable[[Path], T]) -> T:
        self.verify(art)
        return load(self.dir(art))

    # building
    def get_or_build(self, art: Artefact, build: Callable[[Path], None],
                     load: Callable[[Path], T], *, force: bool = False) -> tuple[T, bool]:
        """(loaded artefact, built?) : reuse a verified finished copy unless `force`, else build
        into staging and commit. Concurrent callers wait on the lock and reuse the result."""
        if not self.writer:  # DDP ranks > 0 read what rank 0 committed
            return self.read(art, load), False
        with self.lock(art):
            self._recover(art)
            if self.exists(art) and not force:
                return self.read(art, load), False
            staging = self._hidden(".staging", art)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                with disk_errors(art.label, self.root):
                    build(staging)
                    self._write_manifest(staging, art)
                    self._commit(staging, art)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return load(self.dir(art)), True  # just hashed into its manifest: no second pass

    def _write_manifest(self, staging: Path, art: Artefact) -> None:
        files = {str(p.relative_to(staging)): file_sha256(p)
                 for p in sorted(staging.rglob("*")) if p.is_file() and p.name != MANIFEST}
        manifest = {"store": STORE_FORMAT, "kind": art.kind, "key": art.key, "deps": art.deps,
                    "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_bytes_atomic(staging / MANIFEST,
                           (json.dumps(manifest, indent=2, sort_keys=True, default=str)
                            + "\n").encode())

    def _commit(self, staging: Path, art: Artefact) -> None:
        final, aside = self.dir(art), self._hidden(".aside", art)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)  # the old version stays whole until the new one is in
        os.replace(staging, final)
        _fsync_dir(final.parent)
        shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(self._hidden(".partial", art), ignore_errors=True)

    def _recover(self, art: Artefact) -> None:
        """Under the lock: undo a replacement killed between its two renames, drop leftovers."""
        final, aside = self.dir(art), self._hidden(".aside", art)
        if aside.exists():
            if not final.exists() and (aside / MANIFEST).is_file():
                os.replace(aside, final)
                self.say(f"restored {art.label}: a replacement was interrupted before it landed")
            else:
                shutil.rmtree(aside, ignore_errors=True)
        if final.exists() and not (final / MANIFEST).is_file():
            shutil.rmtree(final, ignore_errors=True)  # pre-store or damaged: never finished
        staging = self._hidden(".staging", art)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            self.say(f"removed an unfinished build of {art.label} (an earlier run was stopped)")

    def clean_staging(self) -> int:
        """Remove staging folders whose builder is gone (their lock is free). Returns the count."""
        removed = 0
        staging_root = self.root / ".staging"
        if not staging_root.is_dir():
            return 0
        for path in staging_root.iterdir():
            kind, _, name = path.name.partition("--")
            if kind not in KINDS:
                continue
            lock = FileLock(str(self.root / ".locks" / f"{path.name}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # being built right now
            try:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            finally:
                lock.release()
        return removed

    def new_sweep_dir(self) -> Path:
        """A new folder name for the job files and logs of one `bench sweep` (not an artefact;
        its executor creates it)."""
        return self.root / "sweeps" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def finished(self, kind: str) -> list[Path]:
        """Folders of finished artefacts of `kind` (hidden and unfinished ones never listed)."""
        base = self.root / kind
        if not base.is_dir():
            return []
        return sorted(p for p in base.iterdir()
                      if not p.name.startswith(".") and (p / MANIFEST).is_file())

    def checkpoint(self, art: Artefact, *, every_s: float = 60.0, every_steps: int = 0,
                   name: str = "checkpoint") -> "StoreCheckpoint":
        """The resumable state of `art`'s build: one file `<name>-<sha256>.pt` per `name` (a
        fit's training is 'checkpoint', its test bits/code 'bits'), all dropped on commit."""
        return StoreCheckpoint(self._hidden(".partial", art), every_s=every_s,
                               every_steps=every_steps, writer=self.writer, say=self.say,
                               name=name)


# --- resumable training -----------------------------------------------------------------------


class StoreCheckpoint:
    """Implements the `Checkpoint` protocol of `vqvae.train` and `priors.base`: the training
    state of one artefact's build, saved atomically as `<name>-<sha256>.pt`, verified
    against that name on load, read with `weights_only=True`."""

    def __init__(self, folder: Path, *, every_s: float, every_steps: int, writer: bool,
                 say: Callable[[str], None], name: str = "checkpoint") -> None:
        self.folder, self.every_s, self.every_steps = folder, every_s, every_steps
        self.writer, self.say, self.name = writer, say, name
        self._last = time.monotonic()

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"{self.name}-*.pt"), key=lambda p: p.stat().st_mtime)

    def load(self) -> dict[str, Any] | None:
        for path in reversed(self._files()):
            digest = path.stem.removeprefix(f"{self.name}-")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                self.say(f"ignoring damaged checkpoint {path}")
                continue
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return None

    def due(self, step: int) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        return self.every_s >= 0 and time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        self._last = time.monotonic()
        if not self.writer:
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        path = self.folder / f"{self.name}-{hashlib.sha256(data).hexdigest()}.pt"
        with disk_errors("a training checkpoint", self.folder):
            write_bytes_atomic(path, data)
        for old in self._files():
            if old != path:
                old.unlink(missing_ok=True)
