"""Backbone: shapes and ranges at the boundary, quantizer agreement, save/load/export refusals."""

import dataclasses

import numpy as np
import pytest
import torch

from vqvae import (VQVAE, CheckpointError, TrainConfig, VQVAEConfig, backbone_hash, decode_codes,
                   encode_array, load_backbone, load_export, save_backbone, save_export,
                   train_vqvae)
from priors import NullProgress
from vqvae.train import one_cycle

SMALL = VQVAEConfig(hidden=16, res_blocks=1, res_hidden=8, num_codes=16, code_dim=8)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return VQVAE(SMALL).eval()


@pytest.mark.parametrize("down,side", [(4, 8), (8, 4)])
def test_encode_decode_shapes_and_ranges(down, side):
    torch.manual_seed(0)
    m = VQVAE(VQVAEConfig(hidden=16, res_blocks=1, res_hidden=8, num_codes=16, code_dim=8,
                          downsample=down)).eval()
    x = torch.rand(3, 1, 32, 32)
    codes = m.encode_indices(x)
    assert codes.shape == (3, side, side) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 16
    y = m.decode_indices(codes)
    assert y.shape == (3, 1, 32, 32)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_quantizer_picks_the_nearest_code(model):
    z_e = torch.randn(2, SMALL.code_dim, 4, 4)
    codes = model.quantizer.indices(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, SMALL.code_dim)
    brute = torch.cdist(flat, model.quantizer.codebook).argmin(1).view(2, 4, 4)
    assert torch.equal(codes, brute)
    assert torch.allclose(model.quantizer.embed(codes).permute(0, 2, 3, 1).reshape(-1, SMALL.code_dim),
                          model.quantizer.codebook[brute.reshape(-1)])


def test_decode_refuses_codes_out_of_range(model):
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        model.decode_indices(torch.full((1, 4, 4), 16))


@pytest.mark.parametrize("field,value,match", [
    ("downsample", 2, "downsample must be 4 or 8"), ("num_codes", 1, "num_codes must be >= 2"),
    ("hidden", 0, "hidden must be >= 1"), ("ema_decay", 1.0, "ema_decay must be in"),
    ("beta", -1.0, "beta must be >= 0"), ("res_blocks", -1, "res_blocks must be >= 0")])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        VQVAEConfig(**{field: value})


@pytest.mark.parametrize("field,value,match", [
    ("epochs", 0, "epochs must be >= 1"), ("batch_size", 0, "batch_size must be >= 1"),
    ("lr", 0.0, "lr must be > 0"), ("final_lr_frac", 0.0, r"final_lr_frac must be in \(0, 1\]"),
    ("final_lr_frac", 1.5, r"final_lr_frac must be in \(0, 1\]")])
def test_train_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def discs(n: int) -> np.ndarray:
    """(n, 32, 32) uint8 white discs of random centre and radius (seeded)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    return np.stack([(255 * (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r)).astype(np.uint8)
                     for cx, cy, r in rng.uniform([10, 10, 5], [22, 22, 12], (n, 3))])


def test_training_reduces_reconstruction_error():
    images = discs(64)
    torch.manual_seed(0)
    m = VQVAE(SMALL)
    x = torch.from_numpy(images).unsqueeze(1).float() / 255
    with torch.no_grad():
        before = float(((m(x)[0] - x) ** 2).mean())
    summary = train_vqvae(m, images, TrainConfig(epochs=30, batch_size=16, lr=3e-3),
                          device=torch.device("cpu"), progress=NullProgress())
    with torch.no_grad():
        after = float(((m.eval()(x)[0] - x) ** 2).mean())
    assert after < 0.3 * before
    assert summary["steps"] == 120


@pytest.mark.parametrize("final_lr_frac", [0.002, 0.05])
def test_the_last_step_runs_at_lr_times_final_lr_frac(final_lr_frac):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, final_lr_frac=final_lr_frac)
    summary = train_vqvae(VQVAE(SMALL), discs(24), cfg, device=torch.device("cpu"),
                          progress=NullProgress())
    assert summary["steps"] == 6
    assert summary["final_lr"] == pytest.approx(1e-3 * final_lr_frac, rel=1e-9)


@pytest.mark.parametrize("steps", [1, 2, 3, 19, 20, 21, 40])
def test_every_step_count_has_a_valid_schedule(steps):
    """OneCycleLR divided by zero when 5% of the steps was exactly one step (20 steps)."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = one_cycle(opt, TrainConfig(lr=1e-3), steps)
    lrs = []
    for _ in range(steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert max(lrs) <= 1e-3 * (1 + 1e-9) and min(lrs) > 0


def test_train_seed_draws_init_batch_order_and_restarts_without_the_global_rng():
    cfg = TrainConfig(epochs=2, batch_size=8, seed=3)
    images = discs(24)

    def trained(build_seed: int, global_seed: int, cfg: TrainConfig) -> dict:
        model = VQVAE(SMALL, seed=build_seed)
        torch.manual_seed(global_seed)
        train_vqvae(model, images, cfg, device=torch.device("cpu"), progress=NullProgress())
        return model.state_dict()

    first = trained(1, 10, cfg)
    for k, v in trained(2, 20, cfg).items():  # another init and global RNG: same net
        assert torch.equal(v, first[k]), k
    other = trained(1, 10, TrainConfig(epochs=2, batch_size=8, seed=4))
    assert not torch.equal(other["quantizer.codebook"], first["quantizer.codebook"])
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    trained(1, 0, cfg)
    assert torch.equal(torch.rand(3), expected)  # the global RNG was not drawn from


def test_a_fresh_backbone_is_drawn_from_its_seed_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a, b = VQVAE(SMALL, seed=7), VQVAE(SMALL)
    assert torch.equal(torch.rand(3), expected)  # construction leaves the global RNG alone
    b.reset_parameters(7)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(VQVAE(SMALL).quantizer.codebook, a.quantizer.codebook)


def test_save_load_round_trip_keeps_hash_and_outputs(model, tmp_path):
    digest = save_backbone(model, tmp_path / "bb", {"note": "test"})
    loaded, record = load_backbone(tmp_path / "bb")
    assert record["hash"] == digest == backbone_hash(loaded)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model.encode_indices(x), loaded.encode_indices(x))


def test_truncated_checkpoint_is_refused(model, tmp_path):
    save_backbone(model, tmp_path / "bb", {})
    weights = tmp_path / "bb" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint"):
        load_backbone(tmp_path / "bb")


def test_tampered_weights_fail_the_hash_check(model, tmp_path):
    save_backbone(model, tmp_path / "bb", {})
    other = VQVAE(SMALL, seed=1)
    from vqvae.io import save_tensors
    save_tensors(tmp_path / "bb" / "model.safetensors", other.state_dict())
    with pytest.raises(CheckpointError, match="fails its hash check"):
        load_backbone(tmp_path / "bb")


def test_missing_backbone_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing .*backbone.json"):
        load_backbone(tmp_path / "nothing")


def _export(model, tmp_path, labels=True):
    images = {s: np.random.default_rng(i).integers(0, 256, (n, 32, 32), dtype=np.uint8)
              for i, (s, n) in enumerate([("train", 6), ("val", 2), ("test", 3)])}
    codes = {s: encode_array(model, im, device=torch.device("cpu")) for s, im in images.items()}
    labs = {s: torch.arange(len(c)) % 2 for s, c in codes.items()} if labels else {}
    digest = backbone_hash(model)
    export = save_export(tmp_path / "ex", codes=codes, labels=labs, codebook=model.codebook,
                         backbone=digest, meta={"label_names": ["AD", "NC"] if labels else []})
    return export, codes, digest


def test_export_round_trip(model, tmp_path):
    export, codes, digest = _export(model, tmp_path)
    again = load_export(tmp_path / "ex", backbone=digest)
    for s in ("train", "val", "test"):
        assert torch.equal(again.codes[s], codes[s]) and again.codes[s].dtype == torch.int64
    assert torch.equal(again.labels["test"], torch.tensor([0, 1, 0]))
    assert again.grid == (8, 8) and again.num_codes == 16 and again.backbone_hash == digest
    assert again.label_names == ("AD", "NC")
    assert torch.equal(again.codebook, model.codebook)
    decoded = decode_codes(model, again.codes["test"], device=torch.device("cpu"))
    assert decoded.shape == (3, 1, 32, 32)


def test_export_of_another_backbone_is_refused(model, tmp_path):
    _export(model, tmp_path)
    other = backbone_hash(VQVAE(SMALL, seed=1))
    with pytest.raises(CheckpointError, match="was made by backbone .* re-export"):
        load_export(tmp_path / "ex", backbone=other)


def test_tampered_export_fails_its_hash(model, tmp_path):
    export, _, digest = _export(model, tmp_path, labels=False)
    import json
    manifest = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    manifest["num_codes"] = 99
    (tmp_path / "ex" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="fails its hash check"):
        load_export(tmp_path / "ex", backbone=digest)


def test_quantizer_assigns_in_fp32_under_bf16_autocast(model):
    """Training on GPU runs under bf16 autocast; code assignment must still be the fp32 one
    that the export uses (bf16 distances flip many near-ties)."""
    torch.manual_seed(0)
    z_e = torch.randn(8, 8, 8, 8)
    near = z_e.permute(0, 2, 3, 1).reshape(-1, 8)[:16]
    model.quantizer.codebook.data = near + 1e-3 * torch.randn_like(near)  # close codes: near-ties
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, codes = model.quantizer(z_e)
    assert torch.equal(codes, model.quantizer.indices(z_e))


def test_dead_codes_are_reseeded_from_encoder_outputs():
    """Codes that attract (almost) no assignments are moved onto encoder outputs, so the
    codebook does not collapse onto a few codes (it did: 18 of 64 used before this rule)."""
    q = VQVAE(SMALL).quantizer.train()
    g = torch.Generator().manual_seed(0)
    z_e = torch.randn(4, SMALL.code_dim, 4, 4, generator=g) + 5.0  # far from the initial codebook
    q.codebook.data.zero_()
    q(z_e, g)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, SMALL.code_dim)
    # every code now sits on (the EMA of) a real encoder output, not at the origin
    assert float(q.codebook.norm(dim=1).min()) > 5.0
    used = q.indices(z_e).unique().numel()
    assert used > SMALL.num_codes // 2, used
    assert torch.cdist(q.codebook, flat).min(1).values.max() < 5.0


@pytest.mark.parametrize("restart_dead", [True, False])
def test_a_learnt_codebook_restarts_dead_codes_only_if_asked(restart_dead):
    """Without EMA the codebook learns from its loss; restarts move unused codes exactly onto
    encoder outputs of the batch, drawn from the generator."""
    cfg = dataclasses.replace(SMALL, ema=False, restart_dead=restart_dead)
    q = VQVAE(cfg).quantizer.train()
    z_e = torch.randn(4, SMALL.code_dim, 4, 4, generator=torch.Generator().manual_seed(0)) + 5.0
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, SMALL.code_dim)
    before = q.codebook.detach().clone()
    _, loss, _ = q(z_e, torch.Generator().manual_seed(1))
    loss.backward()
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0  # codebook loss
    if not restart_dead:
        assert torch.equal(q.codebook.detach(), before)
        return
    # all dead at the first update (64 assignments x (1 - decay) < DEAD_BELOW): every code
    # is now a copy of an encoder output
    on_outputs = (q.codebook.detach()[:, None] == flat[None]).all(-1).any(-1)  # (K,)
    assert bool(on_outputs.all())
