"""The backbone's spread over seeds, per training precision: each (precision, seed) trains (or
reuses) the preset's backbone in OUT's store on the same data (the data seed stays 0: on `mni`
`bench run`'s backbone seed would also draw other synthetic subjects), as `bench run` trains
its backbone, and reports its recon SSIM / PSNR over the whole test split and codes in use. The question it
answers: is a difference between two single backbones (fp32 against bf16, one recipe against
another) larger than what the seed alone moves?

    python scripts/backbone_seeds.py OUT SPEC PRESET PRECISIONS SEEDS

PRECISIONS: comma-separated, e.g. fp32,bf16; SEEDS: e.g. 0,1,2. Example:
    python scripts/backbone_seeds.py results-prec mni quick fp32,bf16 0,1,2
"""
import statistics
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.presets import get_preset
from bench.progress import RichProgress
from bench.data import DataConfig
from bench.stages import (StageContext, backbone_scores, stage_backbone, stage_data,
                          stage_export)
from bench.store import Store


def main() -> None:
    if len(sys.argv) != 6:
        sys.exit(__doc__.split("\n\n")[1])
    out, spec, preset_name, precisions, seeds = sys.argv[1:]
    rows: dict[str, list[dict]] = {}
    store = Store(Path(out)).prepare()
    for precision in precisions.split(","):
        for seed in (int(s) for s in seeds.split(",")):
            preset = get_preset(preset_name).with_precision(precision)
            sc = StageContext(store=store, device=torch.device("cpu"), progress=RichProgress())
            ds = stage_data(spec, DataConfig(resolution=preset.resolution, seed=0,
                                             mni_sizes=preset.mni_sizes), sc)
            model, record, _ = stage_backbone(preset, ds, seed, sc)
            export, _ = stage_export(ds, model, record, sc)
            s, t = backbone_scores(model, ds, export, sc), record["meta"]["summary"]
            rows.setdefault(precision, []).append({
                "seed": seed, "ssim": s["recon_ssim"], "psnr": s["recon_psnr"],
                "codes": s["test_distinct_codes"], "perplexity": s["test_code_perplexity"],
                "steps": t["steps"], "wall": t["train_wall_s"], "hash": record["hash"][:12],
                "num_codes": export.num_codes})
    table = Table(title=f"{spec} · preset {preset_name} · backbone per seed")
    for col in ("precision", "seed", "backbone", "recon SSIM", "PSNR dB", "test codes used",
                "test perplexity", "steps", "train s"):
        table.add_column(col)
    for precision, runs in rows.items():
        for r in runs:
            table.add_row(precision, str(r["seed"]), r["hash"], f"{r['ssim']:.4f}",
                          f"{r['psnr']:.2f}", f"{r['codes']:.0f} / {r['num_codes']}",
                          f"{r['perplexity']:.1f}", f"{r['steps']:.0f}", f"{r['wall']:.0f}")
        if len(runs) > 1:
            ssim = [r["ssim"] for r in runs]
            table.add_row(precision, "mean ± sd", "", f"{statistics.mean(ssim):.4f} ± "
                          f"{statistics.stdev(ssim):.4f}", "", "", "", "", "")
            table.add_row(precision, "max - min", "", f"{max(ssim) - min(ssim):.4f}", "", "",
                          "", "", "")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
