"""Comparison tables: records -> one row per (setting, prior), seeds pooled as mean +/- 95% CI.

A setting is (dataset, preset, backbone, extractor, condition): rows are only compared with rows
scored the same way. The reference row (the backbone's reconstructions) heads each table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from bench.store import write_json_atomic, write_text_atomic

# (record score key, column header, decimals, higher is better?)
COLUMNS: tuple[tuple[str, str, int, bool | None], ...] = (
    ("bits_per_code", "bits/code", 3, False),
    ("fd", "FD-{extractor}", 2, False),
    ("kid", "KID", 4, False),
    ("precision", "precision", 3, True),
    ("recall", "recall", 3, True),
    ("nn_ssim", "NN-SSIM", 3, True),
    ("memorisation", "memorised", 3, False),
    ("diversity_ssim", "pairwise SSIM", 3, None),
    ("distinct_codes", "codes used", 0, None),
    ("code_perplexity", "perplexity", 1, None),
    ("code_js_bits", "JS(codes)", 4, False),
    ("samples_per_s", "samples/s", 1, True),
    ("fit_s", "fit s", 1, False),
)
SETTING = ("dataset", "preset", "backbone", "extractor", "condition")


@dataclass(frozen=True)
class Cell:
    mean: float | None
    half_width: float | None  # 95% t-interval half width; None with one seed
    n: int

    def text(self, decimals: int) -> str:
        if self.mean is None:
            return ""
        s = f"{self.mean:.{decimals}f}"
        return s if self.half_width is None else f"{s} ± {self.half_width:.{decimals}f}"


def pool(values: list[float | None]) -> Cell:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return Cell(None, None, 0)
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return Cell(mean, None, 1)
    sd = pd.Series(vals).std(ddof=1)
    return Cell(mean, float(stats.t.ppf(0.975, len(vals) - 1) * sd / math.sqrt(len(vals))),
                len(vals))


def long_frame(recs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, score): the records in long form."""
    rows = []
    for r in recs:
        setting = {"dataset": r["dataset"], "preset": r["preset"],
                   "backbone": r["backbone_hash"][:12], "extractor": r["extractor"]["name"],
                   "condition": r.get("condition", "none")}
        for key, value in r["scores"].items():
            rows.append(setting | {"prior": r["prior"], "kind": r["kind"], "seed": r["seed"],
                                   "run_id": r["run_id"], "device": r.get("device", ""),
                                   "score": key, "value": value})
    return pd.DataFrame(rows)


def comparison(recs: list[dict[str, Any]]) -> list[tuple[dict[str, str], pd.DataFrame]]:
    """One wide table per setting: rows = priors (reference first), cells = Cell."""
    if not recs:
        return []
    df = long_frame(recs)
    out = []
    for setting, group in df.groupby(list(SETTING), sort=True):
        meta = dict(zip(SETTING, setting))
        rows = []
        order = sorted(group["prior"].unique(), key=lambda p: (not p.startswith("reference"), p))
        for prior in order:
            g = group[group["prior"] == prior]
            row: dict[str, Any] = {"prior": prior, "seeds": int(g["seed"].nunique()),
                                   "device": g["device"].iloc[0]}
            for key, _, _, _ in columns(group):
                row[key] = pool(list(g[g["score"] == key]["value"]))
            rows.append(row)
        out.append((meta, pd.DataFrame(rows)))
    return out


def columns(group: pd.DataFrame) -> tuple[tuple[str, str, int, bool | None], ...]:
    """The fixed columns, then per-class ones (`fd[AD]` -> "FD-{extractor} [AD]") if present."""
    by_key = {key: (head, dec, better) for key, head, dec, better in COLUMNS}
    extra = []
    for key in sorted(k for k in group["score"].unique() if k.endswith("]") and "[" in k):
        base, cls = key[:-1].split("[", 1)
        if base in by_key:
            head, dec, better = by_key[base]
            extra.append((key, f"{head} [{cls}]", dec, better))
    return COLUMNS + tuple(extra)


def table_columns(table: pd.DataFrame) -> tuple[tuple[str, str, int, bool | None], ...]:
    fixed = {key for key, _, _, _ in COLUMNS}
    extra = tuple(c for c in table.columns if c.endswith("]") and c not in fixed)
    return columns(pd.DataFrame({"score": list(fixed) + list(extra)}))


def as_text_frame(meta: dict[str, str], table: pd.DataFrame) -> pd.DataFrame:
    cells = {"prior": table["prior"], "seeds": table["seeds"]}
    for key, head, dec, _ in table_columns(table):
        cells[head.format(extractor=meta["extractor"])] = [c.text(dec) for c in table[key]]
    return pd.DataFrame(cells)


def title(meta: dict[str, str]) -> str:
    cond = "" if meta["condition"] == "none" else f", conditioned on {meta['condition']}"
    return (f"{meta['dataset']} · preset {meta['preset']} · backbone {meta['backbone']} · "
            f"features {meta['extractor']}{cond}")


def to_markdown(tables: list[tuple[dict[str, str], pd.DataFrame]]) -> str:
    parts = []
    for meta, table in tables:
        text = as_text_frame(meta, table)
        head = "| " + " | ".join(text.columns) + " |"
        rule = "|" + "|".join("---" if c == "prior" else "---:" for c in text.columns) + "|"
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in text.itertuples(index=False)]
        parts.append("\n".join([f"### {title(meta)}", "", head, rule, *body, ""]))
    return "\n".join(parts)


def to_latex(tables: list[tuple[dict[str, str], pd.DataFrame]]) -> str:
    parts = []
    for meta, table in tables:
        text = as_text_frame(meta, table).map(lambda v: str(v).replace("±", r"$\pm$"))
        cols = "l" + "r" * (len(text.columns) - 1)
        lines = [r"\begin{table}", r"\centering", f"\\caption{{{title(meta)}}}",
                 f"\\begin{{tabular}}{{{cols}}}", r"\toprule",
                 " & ".join(c.replace("_", r"\_") for c in text.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(str(v).replace("_", r"\_") for v in row) + r" \\"
                  for row in text.itertuples(index=False)]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def to_flat(tables: list[tuple[dict[str, str], pd.DataFrame]]) -> pd.DataFrame:
    """Machine-readable: one row per (setting, prior), mean / ci95 / n per score."""
    rows = []
    for meta, table in tables:
        for _, r in table.iterrows():
            row: dict[str, Any] = meta | {"prior": r["prior"], "seeds": r["seeds"],
                                          "device": r["device"]}
            for key, _, _, _ in table_columns(table):
                row[key] = r[key].mean
                row[f"{key}_ci95"] = r[key].half_width
            rows.append(row)
    return pd.DataFrame(rows)


def write_all(tables: list[tuple[dict[str, str], pd.DataFrame]], out: Path,
              stem: str = "comparison") -> list[Path]:
    """comparison.{md,csv,tex,json} under `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    flat = to_flat(tables)
    paths = [out / f"{stem}.{ext}" for ext in ("md", "csv", "tex", "json")]
    write_text_atomic(paths[0], to_markdown(tables))
    write_text_atomic(paths[1], flat.to_csv(index=False))
    write_text_atomic(paths[2], to_latex(tables))
    write_json_atomic(paths[3], flat.astype(object).where(flat.notna(), None).to_dict("records"))
    return paths


def score_name(key: str, extractor: str) -> str:
    """The human name of a record's score key (`fd` -> `FD-mri`), the key itself if unknown."""
    base, _, cls = key.partition("[")
    names = {k: head for k, head, _, _ in COLUMNS} | {
        "kid_std": "KID std", "recon_ssim": "recon SSIM", "recon_psnr": "recon PSNR (dB)",
        "n_samples": "samples scored", "num_parameters": "parameters"}
    name = names.get(base, base).format(extractor=extractor)
    return f"{name} [{cls.rstrip(']')}]" if cls else name


def backbone_line(record: dict[str, Any]) -> str:
    """One line on the backbone under a table: a prior can be no better than it."""
    bb = record.get("backbone") or {}
    if "recon_ssim" not in bb:
        return "backbone: scores not recorded"
    return (f"backbone: recon SSIM {bb['recon_ssim']:.3f}, PSNR {bb['recon_psnr']:.2f} dB on the "
            f"whole test split; codes used {bb['test_distinct_codes']:.0f} of "
            f"{record.get('num_codes', bb.get('num_codes', '?'))} "
            f"(perplexity {bb['test_code_perplexity']:.1f})")
