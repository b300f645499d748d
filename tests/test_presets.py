"""Preset files: the built-ins load, every prior fits them, a user file is validated key by key."""

import dataclasses
from pathlib import Path

import pytest
import torch

import priors
from bench import presets
from bench.errors import BenchError
from bench.presets import builtin_presets, get_preset, load_preset
from vqvae import TrainConfig, VQVAEConfig

QUICK = (Path(presets.__file__).parent / "quick.toml").read_text()


def write(tmp_path: Path, text: str, name: str = "my.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_builtins_are_the_four_size_classes():
    assert builtin_presets() == ["full", "quick", "standard", "tiny"]
    assert [get_preset(n).base for n in builtin_presets()] == builtin_presets()


def test_quick_is_what_it_was_before_files():
    p = get_preset("quick")
    assert (p.resolution, p.mni_sizes, p.n_samples, p.max_train_images) == (64, (2000, 250, 500), 500, 4000)
    assert p.vqvae == VQVAEConfig()
    assert p.train == TrainConfig(epochs=24, batch_size=32, lr=2e-3)


@pytest.mark.parametrize("name,resolution,grid,codes", [("tiny", 32, 8, 16), ("quick", 64, 16, 64),
                                                         ("standard", 128, 32, 256), ("full", 256, 32, 512)])
def test_builtin_sizes(name, resolution, grid, codes):
    p = get_preset(name)
    assert (p.resolution, p.grid, p.vqvae.num_codes) == (resolution, grid, codes)


@pytest.mark.parametrize("name", ["tiny", "quick", "standard", "full"])
def test_every_prior_has_a_config_for_every_builtin(name):
    preset = get_preset(name)
    for prior in priors.available_priors():
        cls = priors.get_prior(prior)
        assert isinstance(preset.prior_config(cls), cls.Config)


def test_a_file_is_named_by_its_stem_and_hashes_like_the_same_builtin(tmp_path):
    mine = get_preset(write(tmp_path, QUICK))
    assert mine.name == "my"
    assert mine.content_hash == get_preset("quick").content_hash  # same values, same hash


@pytest.mark.parametrize("old,new", [("epochs = 24", "epochs = 25"), ("num_codes = 64", "num_codes = 128"),
                                     ("n_samples = 500", "n_samples = 400"),
                                     ("lr = 2e-3", "lr = 2e-3\n[priors.pixelcnn]\nmax_steps = 7")])
def test_editing_a_value_changes_the_content_hash(tmp_path, old, new):
    assert old in QUICK
    edited = get_preset(write(tmp_path, QUICK.replace(old, new)))
    assert edited.content_hash != get_preset("quick").content_hash


def test_comments_and_description_do_not_change_the_hash(tmp_path):
    text = "# a comment\n" + QUICK.replace('description = "2 CPU cores: minutes"', 'description = "x"')
    assert get_preset(write(tmp_path, text)).content_hash == get_preset("quick").content_hash


def test_prior_overrides_replace_fields_of_the_base_config(tmp_path):
    text = QUICK + "\n[priors.pixelcnn]\nmax_steps = 7\nlr = 1\n"
    preset = get_preset(write(tmp_path, text))
    cls = priors.get_prior("pixelcnn")
    assert preset.prior_config(cls) == dataclasses.replace(cls.preset("quick"), max_steps=7, lr=1.0)
    other = priors.get_prior("transformer")
    assert preset.prior_config(other) == other.preset("quick")


@pytest.mark.parametrize("old,new,needle", [
    ("resolution = 64", "resolutoin = 64", "unknown key 'resolutoin' (did you mean 'resolution'?)"),
    ("num_codes = 64", "num_code = 64", "unknown key 'backbone.num_code' (did you mean 'backbone.num_codes'?)"),
    ("epochs = 24", "epochs = 24\nseed = 3", "train.seed is not a preset value"),
    ("resolution = 64", 'resolution = "64"', "resolution must be int, got '64'"),
    ("n_samples = 500", "n_samples = true", "n_samples must be int, got True"),
    ("num_codes = 64", "num_codes = 64.0", "backbone.num_codes must be int"),
    ("n_samples = 500", "n_samples = 1", "n_samples must be >= 2"),
    ("max_train_images = 4000", "max_train_images = -1", "max_train_images must be >= 0"),
    ("resolution = 64", "resolution = 34", "resolution 34 is not divisible by backbone.downsample 4"),
    ("resolution = 64", "resolution = 48", "resolution must be one of (32, 64, 128, 256), got 48"),
    ("downsample = 4", "downsample = 2", "backbone: downsample must be 4 or 8, got 2"),
    ("mni_sizes = [2000, 250, 500]", "mni_sizes = [2000, 250]", "mni_sizes must be [train, val, test]"),
    ("mni_sizes = [2000, 250, 500]", "mni_sizes = [2000, 0, 500]", "mni_sizes must be >= 1"),
    ('base = "quick"', 'base = "huge"', "base must be one of tiny, quick, standard, full, got 'huge'"),
    ("resolution = 64\n", "", "missing key(s) resolution"),
    ("resolution = 64", "resolution = = 64", "not valid TOML"),
    ("lr = 2e-3", "lr = 2e-3\n[priors.pixelcn]\nmax_steps = 1", "unknown key 'priors.pixelcn' (did you mean 'priors.pixelcnn'?)"),
    ("lr = 2e-3", "lr = 2e-3\n[priors]\npixelcnn = 3", "priors.pixelcnn must be a table"),
    ("lr = 2e-3", "lr = 2e-3\n[priors.pixelcnn]\nchanels = 8", "unknown key 'priors.pixelcnn.chanels' (did you mean 'priors.pixelcnn.channels'?)"),
    ("lr = 2e-3", "lr = 2e-3\n[priors.pixelcnn]\nchannels = 7", "priors.pixelcnn: channels must be an even number"),
])
def test_bad_files_fail_in_one_line_naming_the_key(tmp_path, old, new, needle):
    assert old in QUICK
    with pytest.raises(BenchError) as info:
        get_preset(write(tmp_path, QUICK.replace(old, new)))
    message = str(info.value)
    assert needle in message and "\n" not in message and message.startswith("preset ")


def test_sections_must_be_tables(tmp_path):
    section = QUICK[QUICK.index("[train]"):]
    text = 'train = 3\n' + QUICK.replace(section, "")
    with pytest.raises(BenchError, match="train must be a table"):
        get_preset(write(tmp_path, text))


def test_overrides_must_fit_the_base_config(tmp_path):
    text = QUICK.replace('base = "quick"', 'base = "tiny"') + "\n[priors.transformer]\nn_heads = 32\n"
    with pytest.raises(BenchError, match=r"priors.transformer on base 'tiny': dim must be a multiple"):
        get_preset(write(tmp_path, text))


def test_unknown_names_and_missing_files():
    with pytest.raises(BenchError, match="unknown preset 'huge'; available: full, quick, standard, tiny"):
        get_preset("huge")
    with pytest.raises(BenchError, match="preset file nowhere/my.toml not found"):
        get_preset("nowhere/my.toml")


def test_field_types_a_file_can_and_cannot_set():
    @dataclasses.dataclass(frozen=True)
    class Config:
        sizes: tuple[int, ...] = (1,)
        table: dict = dataclasses.field(default_factory=dict)

    assert presets._dataclass_from(Config, {"sizes": [2, 3]}, "preset x", "p").sizes == (2, 3)
    with pytest.raises(BenchError, match="p.sizes must be a list"):
        presets._dataclass_from(Config, {"sizes": 2}, "preset x", "p")
    with pytest.raises(BenchError, match="p.table has type .* which a preset file cannot set"):
        presets._dataclass_from(Config, {"table": {}}, "preset x", "p")


def test_load_preset_names_its_source():
    with pytest.raises(BenchError, match="preset somewhere: missing key"):
        load_preset("", name="x", source="somewhere")


def test_editing_a_preset_file_changes_the_backbone_key_and_the_run_identity(tmp_path):
    from types import SimpleNamespace

    from bench.presets import get_preset
    from bench.run import preset_identity
    from bench.stages import backbone_artefact
    text = (Path(__file__).parents[1] / "bench" / "presets" / "quick.toml").read_text()
    before, after = tmp_path / "mine.toml", tmp_path / "edited" / "mine.toml"
    after.parent.mkdir()
    before.write_text(text)
    after.write_text(text.replace("num_codes = 64", "num_codes = 128"))
    ds = SimpleNamespace(fingerprint="f")
    keys = [backbone_artefact(get_preset(str(p)), ds, 0, torch.device("cpu")).key
            for p in (before, after)]
    assert keys[0] != keys[1]
    ids = [preset_identity(get_preset(str(p))) for p in (before, after)]
    assert ids[0]["name"] == ids[1]["name"] == "mine"
    assert ids[0]["content_hash"] != ids[1]["content_hash"]
