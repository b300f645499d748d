"""The artefact store: build once, verify on read, atomic replacement, locks, checkpoints."""

import errno
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

from bench import records
from bench.errors import ArtefactError, BenchError
from bench.store import Artefact, Store, artefact_key


def art(name: str = "a") -> Artefact:
    return Artefact.of("scores", {"name": name})


def writer(text: str, calls: list | None = None):
    def build(directory: Path) -> None:
        if calls is not None:
            calls.append(text)
        (directory / "value.txt").write_text(text)
    return build


def read_value(directory: Path) -> str:
    return (directory / "value.txt").read_text()


def test_key_names_kind_and_every_dependency():
    assert artefact_key("exports", {"backbone": "b", "data": "d1"}) != \
        artefact_key("exports", {"backbone": "b", "data": "d2"})
    assert artefact_key("exports", {"a": 1}) != artefact_key("backbones", {"a": 1})
    assert artefact_key("exports", {"a": 1, "b": 2}) == artefact_key("exports", {"b": 2, "a": 1})
    with pytest.raises(ValueError, match="unknown artefact kind 'export'"):
        artefact_key("export", {})


def test_builds_once_then_reuses(tmp_path):
    store, calls = Store(tmp_path), []
    assert store.get_or_build(art(), writer("1", calls), read_value) == ("1", True)
    assert store.get_or_build(art(), writer("2", calls), read_value) == ("1", False)
    assert calls == ["1"]
    manifest = json.loads((store.dir(art()) / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"value.txt"} and manifest["deps"] == {"name": "a"}


def test_force_replaces(tmp_path):
    store = Store(tmp_path)
    store.get_or_build(art(), writer("old"), read_value)
    assert store.get_or_build(art(), writer("new"), read_value, force=True) == ("new", True)
    assert not any((tmp_path / ".aside").iterdir())


def test_same_size_corruption_is_found_on_read(tmp_path):
    store = Store(tmp_path)
    store.get_or_build(art(), writer("abcdef"), read_value)
    (store.dir(art()) / "value.txt").write_text("abcdeX")
    with pytest.raises(ArtefactError, match=r"value.txt fails its sha256 check.*--force"):
        store.get_or_build(art(), writer("again"), read_value)
    assert store.get_or_build(art(), writer("again"), read_value, force=True) == ("again", True)


def test_missing_file_is_found_on_read(tmp_path):
    store = Store(tmp_path)
    store.get_or_build(art(), writer("x"), read_value)
    (store.dir(art()) / "value.txt").unlink()
    with pytest.raises(ArtefactError, match="missing from a finished artefact"):
        store.read(art(), read_value)


def test_failed_build_leaves_nothing(tmp_path):
    store = Store(tmp_path)

    def broken(directory: Path) -> None:
        (directory / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        store.get_or_build(art(), broken, read_value)
    assert not store.exists(art()) and not store.dir(art()).exists()
    assert not any((tmp_path / ".staging").iterdir())


def test_full_disk_is_one_line_naming_the_folder(tmp_path):
    store = Store(tmp_path)

    def full(directory: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BenchError, match=f"no space left on the device while writing scores/.* into {tmp_path}"):
        store.get_or_build(art(), full, read_value)
    assert not any((tmp_path / ".staging").iterdir())


def test_replacement_killed_between_renames_is_undone(tmp_path, monkeypatch):
    store = Store(tmp_path)
    store.get_or_build(art(), writer("old"), read_value)
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # manifest written, old moved aside, new not yet in place
            raise KeyboardInterrupt("kill")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        store.get_or_build(art(), writer("new"), read_value, force=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not store.dir(art()).exists()  # the moment of the kill: nothing finished in place
    assert store.get_or_build(art(), writer("rebuilt"), read_value) == ("old", False)


def test_unfinished_builds_are_invisible_and_cleaned(tmp_path):
    store = Store(tmp_path).prepare()
    store.get_or_build(Artefact.of("runs", {"r": 1}, prefix="uniform-"),
                       records.writer(_record()), records.read)
    leftover = tmp_path / ".staging" / "runs--uniform-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "record.json").write_text(json.dumps(_record()))
    (tmp_path / "runs" / ".uniform-old.tmp").mkdir()
    assert [r["prior"] for r in records.collect(tmp_path)] == ["uniform"]
    assert store.clean_staging() == 1 and not leftover.exists()


def _record(**changes) -> dict:
    base = {"kind": "prior", "prior": "uniform", "dataset": "mni", "preset": "tiny", "seed": 0,
            "run_id": "x", "backbone_hash": "b" * 64, "export_hash": "e" * 64,
            "extractor": {"name": "mri", "id": "mri-1"}, "scores": {"fd": 1.0, "kid": None}}
    return base | changes


@pytest.mark.parametrize("content, why", [
    ({}, "no 'kind' field"),
    ([], "a JSON list"),
    (_record(scores={"fd": "big"}), "non-numeric scores"),
    (_record(seed="0"), "field 'seed' is str"),
])
def test_a_record_of_the_wrong_shape_is_skipped_with_a_warning(tmp_path, content, why):
    store = Store(tmp_path)

    def build(directory: Path) -> None:
        (directory / "record.json").write_text(json.dumps(content))

    store.get_or_build(Artefact.of("runs", {"bad": 1}, prefix="bad-"), build, lambda d: None)
    warnings = []
    assert records.collect(tmp_path, warn=warnings.append) == []
    assert len(warnings) == 1 and why in warnings[0] and "bad-" in warnings[0]


def test_an_older_layout_record_is_skipped_with_a_warning(tmp_path):
    old = tmp_path / "runs" / "uniform-abc"
    old.mkdir(parents=True)
    (old / "record.json").write_text(json.dumps(_record()))
    warnings = []
    assert records.collect(tmp_path, warn=warnings.append) == []
    assert "no manifest" in warnings[0]


def _slow_build(root: str, log: str) -> None:
    def build(directory: Path) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        (directory / "value.txt").write_text("shared")
    value, _ = Store(Path(root)).get_or_build(art("shared"), build, read_value)
    assert value == "shared"


def test_concurrent_processes_build_once(tmp_path):
    log = tmp_path / "log.txt"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_slow_build, args=(str(tmp_path / "store"), str(log)))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "built\n"


def test_checkpoint_round_trip_damage_and_removal_on_commit(tmp_path):
    store = Store(tmp_path)
    a = art("ckpt")
    ckpt = store.checkpoint(a, every_s=3600, every_steps=5)
    assert ckpt.load() is None and ckpt.due(5) and not ckpt.due(4)
    ckpt.save({"step": 5, "w": torch.arange(3.0), "rng": torch.get_rng_state()})
    ckpt.save({"step": 10, "w": torch.arange(4.0), "rng": torch.get_rng_state()})
    state = store.checkpoint(a).load()
    assert state["step"] == 10 and torch.equal(state["w"], torch.arange(4.0))
    files = list((tmp_path / ".partial").glob("*/checkpoint-*.pt"))
    assert len(files) == 1  # older checkpoints are removed once a newer one is in place
    files[0].write_bytes(files[0].read_bytes()[:-3] + b"xyz")
    assert store.checkpoint(a).load() is None  # damaged: ignored, never half-read
    store.checkpoint(a).save({"step": 1})
    store.get_or_build(a, writer("done"), read_value)
    assert not any((tmp_path / ".partial").iterdir())


def test_named_checkpoints_of_one_build_keep_their_own_state_until_commit(tmp_path):
    """A fit keeps its training ('checkpoint') and its test bits/code ('bits') side by side:
    saving one never removes the other, and the commit removes both."""
    store = Store(tmp_path)
    a = art("named")
    store.checkpoint(a).save({"step": 7})
    bits = store.checkpoint(a, name="bits")
    assert bits.load() is None
    bits.save({"step": 2})
    bits.save({"step": 3})
    assert store.checkpoint(a).load() == {"step": 7}
    assert store.checkpoint(a, name="bits").load() == {"step": 3}
    assert len(list((tmp_path / ".partial").glob("*/*.pt"))) == 2
    store.get_or_build(a, writer("done"), read_value)
    assert not any((tmp_path / ".partial").iterdir())


def test_a_cuda_export_is_its_own_artefact_and_the_cpu_key_is_unchanged():
    from bench.stages import export_artefact
    cpu = export_artefact("b" * 64, "f" * 20, torch.device("cpu"))
    cuda = export_artefact("b" * 64, "f" * 20, torch.device("cuda"))
    # CPU (fp32) exports keep the key every export had before encodings were told apart, so
    # stored CPU results stay found; CUDA's bf16-autocast encoding gets a folder of its own
    assert cpu.key == artefact_key("exports", {"backbone": "b" * 64, "data": "f" * 20})
    assert cuda.key != cpu.key and cuda.deps["encode"] == "bf16-autocast"
    assert export_artefact("b" * 64, "f" * 20, torch.device("cuda", 1)).key == cuda.key
