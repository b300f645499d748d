"""Benchmark presets: one file fixes data size, backbone, training budget and sample count.

A preset is a TOML file. The built-in ones (tiny, quick, standard, full) ship in this folder;
`bench run --preset path/to/my.toml` takes any file of the same form:

    base = "quick"              # built-in size class of what the file does not set: each
                                # prior's config, the feature extractor, `bench perf` sizes
    resolution = 64             # px, square side of every image
    mni_sizes = [2000, 250, 500]  # (train, val, test) images of the embedded `mni` dataset
    n_samples = 500             # decoded samples scored per run
    max_train_images = 4000     # cap on backbone training images (0 = all)
    description = "..."         # optional, free text

    [backbone]                  # vqvae.VQVAEConfig fields (unset: the class defaults)
    num_codes = 64
    [train]                     # vqvae.TrainConfig fields but `seed` (the backbone seed, 0)
    epochs = 24
    precision = "auto"          # fp32 | bf16 | auto (the default; see below)
    [priors.pixelcnn]           # that prior's Config fields, replacing its `base` config's
    max_steps = 1000
    precision = "fp32"          # network priors (FitConfig) have the same precision field

`bench run --precision P` replaces every training precision of a preset (`with_precision`).
auto trains in bf16 autocast on CUDA; on CPUs with native bf16 (AVX512-BF16 or AMX) the backbone
does too and each network prior follows its class's `cpu_bf16_from_positions`; other CPUs train
in fp32. Cache keys name each precision as it resolved on the run's device, not as written here
(`content_hash` leaves precisions out).

Unknown keys, wrong types and impossible combinations are one-line `BenchError`s naming the
key. `Preset.content_hash` is a sha256 of everything the preset fixes, so that cache keys and
records that include it never mix artefacts of an edited file with the old ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import priors
from bench.data.base import RESOLUTIONS
from bench.errors import BenchError
from vqvae import TrainConfig, VQVAEConfig
from vqvae.train import PRECISIONS

BASES = priors.PRESETS  # the built-in size classes priors and extractors know by name
TOP_KEYS = ("base", "resolution", "mni_sizes", "n_samples", "max_train_images", "description",
            "backbone", "train", "priors")
REQUIRED = ("base", "resolution", "mni_sizes", "n_samples", "max_train_images")


@dataclass(frozen=True)
class Preset:
    name: str  # the file's stem: "quick", or "my" for my.toml
    resolution: int  # px, square side of every image
    mni_sizes: tuple[int, int, int]  # (train, val, test) images of the embedded default
    vqvae: VQVAEConfig
    train: TrainConfig
    n_samples: int  # decoded samples scored per run (and real test images they are scored against)
    max_train_images: int  # cap on backbone training images (0 = all), keeps quick within budget
    base: str = "quick"  # built-in size class of prior configs, the extractor and perf sizes
    prior_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> fields
    description: str = ""
    precision: str = ""  # set by `with_precision`: every prior's precision; "" = their configs'

    @property
    def grid(self) -> int:
        """Side of the code grid."""
        return self.resolution // self.vqvae.downsample

    @property
    def content_hash(self) -> str:
        """sha256 of every value the preset fixes (not its name, description or file layout)
        but training precisions: what a precision means depends on the device (auto), so cache
        keys name each precision as it resolved (`bench.stages.precision_keyed`) instead."""
        def fixed(fields: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in fields.items() if k != "precision"}

        content = {"base": self.base, "resolution": self.resolution,
                   "mni_sizes": list(self.mni_sizes), "n_samples": self.n_samples,
                   "max_train_images": self.max_train_images,
                   "backbone": dataclasses.asdict(self.vqvae),
                   "train": fixed(dataclasses.asdict(self.train)),
                   "priors": {name: fixed(o) for name, o in self.prior_overrides.items()}}
        text = json.dumps(content, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def prior_config(self, cls: type[priors.Prior]) -> Any:
        """The config of prior class `cls` under this preset: its `base` config with this
        preset's overrides for it (if any) replaced in, and `precision` if set and the config
        has that field."""
        config = dataclasses.replace(cls.preset(self.base),
                                     **self.prior_overrides.get(cls.name, {}))
        if self.precision and "precision" in {f.name for f in dataclasses.fields(config)}:
            config = dataclasses.replace(config, precision=self.precision)
        return config

    def with_precision(self, precision: str | None) -> "Preset":
        """This preset with every training precision (the backbone's and each network prior's)
        set to `precision`, one of vqvae.train.PRECISIONS; None: this preset unchanged."""
        if precision is None:
            return self
        if precision not in PRECISIONS:
            raise BenchError(f"unknown precision {precision!r}; available: "
                             f"{', '.join(PRECISIONS)}")
        train = dataclasses.replace(self.train, precision=precision)
        return dataclasses.replace(self, train=train, precision=precision)


def builtin_presets() -> list[str]:
    """Names of the presets shipped in this package."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".toml"))


def get_preset(spec: str) -> Preset:
    """A built-in preset by name, or a preset file by path (anything ending in .toml)."""
    if spec.endswith(".toml") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_file():
            raise BenchError(f"preset file {spec} not found")
        return load_preset(path.read_text(encoding="utf-8"), name=path.stem, source=spec)
    if spec not in builtin_presets():
        raise BenchError(f"unknown preset {spec!r}; available: {', '.join(builtin_presets())} "
                         f"or a path to a .toml file")
    text = resources.files(__name__).joinpath(f"{spec}.toml").read_text(encoding="utf-8")
    return load_preset(text, name=spec, source=f"built-in {spec}")


def load_preset(text: str, *, name: str, source: str) -> Preset:
    """Parse and validate preset TOML `text`; errors name `source` and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"preset {source}: not valid TOML: {e}") from None
    where = f"preset {source}"
    known_keys(raw, TOP_KEYS, where, "")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise BenchError(f"{where}: missing key(s) {', '.join(missing)}")
    base = typed(raw["base"], str, where, "base")
    if base not in BASES:
        raise BenchError(f"{where}: base must be one of {', '.join(BASES)}, got {base!r}")
    resolution = typed(raw["resolution"], int, where, "resolution")
    vqvae = _dataclass_from(VQVAEConfig, _table(raw, "backbone", where), where, "backbone")
    if resolution % vqvae.downsample:
        raise BenchError(f"{where}: resolution {resolution} is not divisible by "
                         f"backbone.downsample {vqvae.downsample}: the code grid would not be whole")
    if resolution not in RESOLUTIONS:
        raise BenchError(f"{where}: resolution must be one of {RESOLUTIONS}, got {resolution}")
    train_fields = _table(raw, "train", where)
    if "seed" in train_fields:
        raise BenchError(f"{where}: train.seed is not a preset value (every backbone is trained "
                         f"with the backbone seed, 0, shared by the priors and seeds compared)")
    return Preset(
        name=name, resolution=resolution,
        mni_sizes=_sizes(raw["mni_sizes"], where), vqvae=vqvae,
        train=_dataclass_from(TrainConfig, train_fields, where, "train"),
        n_samples=_at_least(typed(raw["n_samples"], int, where, "n_samples"), 2, where, "n_samples"),
        max_train_images=_at_least(typed(raw["max_train_images"], int, where, "max_train_images"),
                                   0, where, "max_train_images"),
        base=base, prior_overrides=_prior_overrides(raw, base, where),
        description=typed(raw.get("description", ""), str, where, "description"))


def known_keys(table: dict[str, Any], valid: typing.Iterable[str], where: str, prefix: str) -> None:
    valid = list(valid)
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise BenchError(f"{where}: unknown key '{prefix}{key}'{hint}; valid: "
                             f"{', '.join(prefix + v for v in valid)}")


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise BenchError(f"{where}: {key} must be a table ([{key}]), got {type(value).__name__}")
    return value


def typed(value: Any, kind: type, where: str, key: str) -> Any:
    """`value` if it is a `kind` (an int is a float too; a bool is never an int)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BenchError(f"{where}: {key} must be {kind.__name__}, got {value!r} "
                         f"({type(value).__name__})")
    return value


def _at_least(value: int, low: int, where: str, key: str) -> int:
    if value < low:
        raise BenchError(f"{where}: {key} must be >= {low}, got {value}")
    return value


def _sizes(value: Any, where: str) -> tuple[int, int, int]:
    if not isinstance(value, list) or len(value) != 3:
        raise BenchError(f"{where}: mni_sizes must be [train, val, test] counts, got {value!r}")
    return tuple(_at_least(typed(v, int, where, "mni_sizes"), 1, where, "mni_sizes")
                 for v in value)  # type: ignore[return-value]


def _dataclass_from(cls: type, values: dict[str, Any], where: str, prefix: str) -> Any:
    """cls(**values) with every key known and typed as the field; its validation named."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not (cls is TrainConfig and f.name == "seed")]
    known_keys(values, names, where, f"{prefix}.")
    kwargs = {k: field_value(v, hints[k], where, f"{prefix}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise BenchError(f"{where}: {prefix}: {e}") from None


def field_value(value: Any, hint: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise BenchError(f"{where}: {key} must be a list, got {value!r}")
        inner = typing.get_args(hint)[0]
        return tuple(typed(v, inner, where, key) for v in value)
    if hint in (int, float, str, bool):
        return typed(value, hint, where, key)
    raise BenchError(f"{where}: {key} has type {hint}, which a preset file cannot set")


def _prior_overrides(raw: dict[str, Any], base: str, where: str) -> dict[str, dict[str, Any]]:
    """Validated [priors.<name>] tables: each known prior, each field typed and accepted."""
    table = _table(raw, "priors", where)
    known_keys(table, priors.available_priors(), where, "priors.")
    out = {}
    for name, values in table.items():
        if not isinstance(values, dict):
            raise BenchError(f"{where}: priors.{name} must be a table ([priors.{name}])")
        cls = priors.get_prior(name)
        config = _dataclass_from(cls.Config, values, where, f"priors.{name}")
        out[name] = {k: getattr(config, k) for k in values}
        try:  # the overrides must also fit the base config they replace fields of
            dataclasses.replace(cls.preset(base), **out[name])
        except ValueError as e:
            raise BenchError(f"{where}: priors.{name} on base {base!r}: {e}") from None
    return out
