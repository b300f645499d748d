"""`bench report`: a self-contained Markdown report with PNG figures for every setting.

Figures per setting: sample grids per prior (and per class), code maps of real and generated
grids, training curves, the codebook usage histogram and a 2-D projection of the codebook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no global figure manager or backend choice

from bench import records, tables
from bench.errors import ArtefactError, BenchError
from bench.store import Store, prepare_out, read_json, write_text_atomic
from vqvae import CheckpointError, VQVAE, CodeExport, decode_codes, load_backbone, load_export

GRID_SIDE = 6  # samples per row / column in a sample grid


def stored_backbone(out: Path, record: dict[str, Any]) -> tuple[VQVAE, CodeExport, Path]:
    """The backbone and code export a record names (verified by the store)."""
    store = Store(out)
    try:
        folders = {k: out / v for k, v in record["artefacts"].items()}
        store.verify_dir(folders["backbone"])
        store.verify_dir(folders["export"])
        model = load_backbone(folders["backbone"])[0]
        export = load_export(folders["export"], backbone=record["backbone_hash"])
    except (KeyError, TypeError, CheckpointError, ArtefactError) as e:
        raise ArtefactError(f"the backbone or export of {record.get('path')} is not usable "
                            f"({' '.join(str(e).split())[:200]}); the records need them to "
                            f"decode their samples") from None
    return model, export, folders["backbone"]


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")


def image_grid(images: torch.Tensor, path: Path, title: str) -> None:
    """(N, 1, H, W) in [0, 1] -> one PNG grid of up to GRID_SIDE^2 images."""
    n = min(len(images), GRID_SIDE * GRID_SIDE)
    cols = min(GRID_SIDE, n)
    rows = max(1, -(-n // cols))
    h, w = images.shape[-2:]
    canvas = np.ones((rows * (h + 2), cols * (w + 2)))
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = images[i, 0].numpy()
    fig = Figure(figsize=(cols * 1.2, rows * 1.2 + 0.4))
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    _save(fig, path)


def code_maps(real: torch.Tensor, generated: dict[str, torch.Tensor], K: int, path: Path) -> None:
    """Rows: real test grids, then each prior's samples; colour = code index."""
    rows = [("real (test)", real)] + list(generated.items())
    cols = 4
    fig = Figure(figsize=(cols * 1.3, len(rows) * 1.3))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (name, codes) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(codes):
                ax.imshow(codes[c].numpy(), cmap="nipy_spectral", vmin=0, vmax=K - 1,
                          interpolation="nearest")
        axes[r, 0].set_title(name, fontsize=8, loc="left")
    _save(fig, path)


def usage_histogram(test_codes: torch.Tensor, generated: dict[str, torch.Tensor], K: int,
                    path: Path) -> None:
    test = torch.bincount(test_codes.reshape(-1), minlength=K).double()
    order = torch.argsort(test, descending=True)
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    ax.bar(np.arange(K), (test / test.sum())[order].numpy(), color="lightgrey", label="test codes")
    for name, codes in generated.items():
        counts = torch.bincount(codes.reshape(-1), minlength=K).double()
        ax.plot(np.arange(K), (counts / counts.sum())[order].numpy(), lw=1, label=name)
    ax.set_xlabel("code (sorted by test frequency)")
    ax.set_ylabel("share of positions")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    _save(fig, path)


def codebook_projection(codebook: torch.Tensor, test_codes: torch.Tensor, path: Path) -> None:
    """PCA of the (K, D) codebook; marker area ~ test usage."""
    x = codebook.double() - codebook.double().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    xy = (x @ v[:2].T).numpy()
    counts = torch.bincount(test_codes.reshape(-1), minlength=codebook.shape[0]).double().numpy()
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.scatter(xy[:, 0], xy[:, 1], s=4 + 200 * counts / max(counts.max(), 1), alpha=0.6,
               c=np.where(counts > 0, "tab:blue", "tab:red"))
    ax.set_title("codebook PCA (size = test usage, red = unused)", fontsize=8)
    _save(fig, path)


Line = tuple[str, list[float], list[float]]  # (legend label, progress steps, values)


def curve_panels(recs: list[dict[str, Any]]) -> dict[str, list[Line]]:
    """metric name -> one line per run that reported it while fitting. Each prior names its
    metrics with their unit (val_bits_per_code, g_loss, ...): a name is one panel, so numbers
    of different meaning never share axes."""
    panels: dict[str, list[Line]] = {}
    for r in recs:
        for c in r.get("curves", {}).values():
            for name, values in c.items():
                if name != "step" and values:
                    panels.setdefault(name, []).append(
                        (f"{r['prior']} s{r['seed']}", c["step"], values))
    return dict(sorted(panels.items()))


def training_curves(backbone_meta: dict[str, Any], recs: list[dict[str, Any]], path: Path) -> None:
    """The backbone's recon MSE per step, then one panel per metric the priors reported."""
    panels = curve_panels(recs)
    fig = Figure(figsize=(4.5 * (1 + len(panels)), 3))
    backbone, *axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
    curve = backbone_meta.get("curve", {})
    if curve.get("mse"):
        backbone.plot(curve["step"], curve["mse"], lw=0.8)
    backbone.set(title="backbone", xlabel="step", ylabel="recon MSE", yscale="log")
    for ax, (name, lines) in zip(axes, panels.items()):
        for label, steps, values in lines:
            ax.plot(steps, values, marker=".", label=label)
        ax.set(title=name, xlabel="fit progress step (epoch for the built-ins)", ylabel=name)
        ax.legend(fontsize=7)
    _save(fig, path)


def sample_figures(model: VQVAE, recs: list[dict[str, Any]], label_names: tuple[str, ...],
                   folder: Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    """One sample grid per prior (first seed), per class when conditional. Returns the image
    paths (relative to folder's parent) and the generated codes per prior."""
    lines, generated = [], {}
    seen: set[str] = set()
    for r in sorted(recs, key=lambda r: (r["prior"], r["seed"])):
        if r["prior"] in seen:
            continue
        seen.add(r["prior"])
        arts = records.read_tensors(Path(r["path"]))
        codes = arts["samples/codes"]
        generated[r["prior"]] = codes
        labels = arts.get("samples/labels")
        groups = [("", torch.ones(len(codes), dtype=torch.bool))]
        if labels is not None and label_names:
            groups = [(f" [{name}]", labels == c) for c, name in enumerate(label_names)]
        for suffix, mask in groups:
            pick = codes[mask][: GRID_SIDE * GRID_SIDE]
            images = decode_codes(model, pick, device=torch.device("cpu"))
            name = f"samples-{slug(r['prior'] + suffix)}.png"
            image_grid(images, folder / name, f"{r['prior']}{suffix} (seed {r['seed']})")
            lines.append(f"![{r['prior']}{suffix}]({folder.name}/{name})")
    return lines, generated


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


def setting_section(out: Path, meta: dict[str, Any], table, recs: list[dict[str, Any]],
                    folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    model, export, bb_dir = stored_backbone(out, recs[0])
    lines = [f"## {tables.title(meta)}", "", *tables.markdown_table(meta, table), ""]
    sample_lines, generated = sample_figures(model, recs, export.label_names, folder)
    lines += ["### Samples", "", *sample_lines, ""]
    code_maps(export.codes["test"][:4], {k: v[:4] for k, v in generated.items()},
              export.num_codes, folder / "code-maps.png")
    usage_histogram(export.codes["test"], generated, export.num_codes, folder / "code-usage.png")
    codebook_projection(export.codebook, export.codes["test"], folder / "codebook-pca.png")
    training_curves(read_json(bb_dir / "backbone.json")["meta"], recs, folder / "training.png")
    for title, name in (("Code maps (real test grids, then samples)", "code-maps.png"),
                        ("Codebook usage", "code-usage.png"),
                        ("Codebook, 2-D projection", "codebook-pca.png"),
                        ("Training curves", "training.png")):
        lines += [f"### {title}", "", f"![{title}]({folder.name}/{name})", ""]
    return "\n".join(lines)


def write_report(out: Path, report_dir: Path | None = None,
                 warn: Callable[[str], None] = lambda _: None) -> Path:
    """Write report.md and its figures under report_dir (default out/report); returns the path."""
    recs = records.collect(out, warn=warn, carried=False)  # figures need the store's samples
    if not recs:
        raise BenchError(f"no finished runs under {out / 'runs'}; run `bench run` first")
    report_dir = prepare_out(report_dir or out / "report")
    parts = ["# vq-prior-bench report", "",
             "Rows are priors scored on the same backbone, features and real test images; the "
             "reference row scores the backbone's reconstructions of held-out real test images, "
             "the ceiling a prior can reach. Cells are mean ± 95% t-interval over seeds.", ""]
    for meta, members in tables.groups(recs):
        mine = [r for r in members if r["kind"] == "prior"]
        if not mine:
            continue
        table = tables.wide_table(members)
        folder = report_dir / slug(f"{meta['dataset']}-{meta['preset']}-{meta['backbone']}-"
                                   f"{meta['extractor']}-{meta['condition']}"
                                   f"{'-from-' + meta['trained_on_name'] if meta['trained_on'] else ''}")
        parts.append(setting_section(out, meta, table, mine, folder))
    path = report_dir / "report.md"
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path
