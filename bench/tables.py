"""Comparison tables: records -> one row per (setting, prior), seeds pooled as mean +/- 95% CI.

A setting is (data, preset, backbone, extractor, condition, and for runs re-scored against
other data by `bench score`, the data their samples were trained on): rows are only compared
with rows scored the same way. Data is the dataset's kind + fingerprint, so every spelling of
one dataset path makes one table, shown under the dataset's short name. The ceiling rows
(reference, and any other record that is not a prior) head each table; the backbone's own scores
(recon SSIM and PSNR, code usage) head it as a line of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from bench.data import display_name
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
# key of record["backbone"] (the backbone's own scores) -> its name in csv and json
BACKBONE = {"recon_ssim": "backbone recon SSIM", "recon_psnr": "backbone recon PSNR (dB)",
            "train_distinct_codes": "backbone codes used (train)",
            "test_distinct_codes": "backbone codes used (test)",
            "train_code_perplexity": "backbone perplexity (train)",
            "test_code_perplexity": "backbone perplexity (test)"}
# what a table is keyed by; `trained_on`: "" for runs, or the data a re-scored run (`bench
# score`) was trained on, so its rows never mix with runs trained on the data they are scored on
SETTING = ("data", "trained_on", "preset", "backbone", "extractor", "real_side", "condition")
# setting / meta key -> its name in csv and json
SETTING_FIELDS = {"dataset": "dataset", "data_kind": "data kind",
                  "data_fingerprint": "data fingerprint", "preset": "preset",
                  "backbone": "backbone", "extractor": "features",
                  "real_side": "compared with", "condition": "condition",
                  "trained_on_name": "samples trained on",
                  "trained_on_fingerprint": "samples trained on fingerprint"}


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


def known_data(recs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """(backbone hash, spec as typed) -> the `data` of a record that has one, so that a record
    written before records carried `data` (a cached reference row) joins its runs' table."""
    return {(r["backbone_hash"], r["dataset"]): r["data"] for r in recs if r.get("data")}


def setting_of(r: dict[str, Any], known: dict[tuple[str, str], dict[str, str]]) -> dict[str, str]:
    """The table a record belongs to, and the dataset's short name."""
    data = r.get("data") or known.get((r["backbone_hash"], r["dataset"]))
    if data:
        key, kind, fingerprint, name = (f"{data['kind']}:{data['fingerprint']}", data["kind"],
                                        data["fingerprint"], data["name"])
    else:  # an old record: the spec as typed is all there is
        key, kind, fingerprint = f"spec:{r['dataset']}", r["dataset"].partition(":")[0], ""
        name = display_name(r["dataset"])
    source = (r.get("against") or {}).get("data") or {}  # a record of `bench score`
    return {"data": key, "dataset": name, "data_kind": kind, "data_fingerprint": fingerprint,
            "preset": r["preset"], "backbone": r["backbone_hash"][:12],
            "extractor": r["extractor"]["name"], "condition": r.get("condition", "none"),
            # records before scores were taken against decoded test codes: the test images
            "real_side": r.get("real_side", "test images"),
            "trained_on": f"{source['kind']}:{source['fingerprint']}" if source else "",
            "trained_on_name": source.get("name", ""),
            "trained_on_fingerprint": source.get("fingerprint", "")}


def groups(recs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(meta, records) per setting, sorted. meta: the setting, the dataset's short name, K and
    the backbone's scores (from any record of the group that has them: ceiling rows lack them)."""
    known = known_data(recs)
    by_key: dict[tuple[str, ...], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for r in recs:
        setting = setting_of(r, known)
        by_key.setdefault(tuple(setting[k] for k in SETTING), (setting, []))[1].append(r)
    out = []
    for key in sorted(by_key, key=lambda k: (k[1] != "", k)):  # re-scored runs last
        setting, members = by_key[key]
        backbone = next((r["backbone"] for r in members if r.get("backbone")), {})
        num_codes = next((r["num_codes"] for r in members if r.get("num_codes")), None)
        runs = sorted({r["against"]["run_id"] for r in members
                       if r["kind"] == "prior" and r.get("against")})
        twins = next((r["twins"] for r in members if r.get("twins")), {})
        out.append((setting | {"backbone_scores": backbone, "num_codes": num_codes,
                               "source_runs": runs, "twins": twins}, members))
    return out


def long_frame(recs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, score) of one setting: the records in long form."""
    rows = []
    for r in recs:
        for key, value in r["scores"].items():
            rows.append({"prior": r["prior"], "kind": r["kind"], "seed": r["seed"],
                         "run_id": r["run_id"], "device": r.get("device", ""),
                         "score": key, "value": value})
    return pd.DataFrame(rows, columns=["prior", "kind", "seed", "run_id", "device", "score",
                                       "value"])


def wide_table(recs: list[dict[str, Any]]) -> pd.DataFrame:
    """The records of one setting as rows = priors (ceiling rows first), cells = Cell."""
    df = long_frame(recs)
    ceilings = set(df.loc[df["kind"] != "prior", "prior"])
    rows = []
    for prior in sorted(df["prior"].unique(), key=lambda p: (p not in ceilings, p)):
        g = df[df["prior"] == prior]
        row: dict[str, Any] = {"prior": prior, "seeds": int(g["seed"].nunique()),
                               "device": g["device"].iloc[0]}
        for key, _, _, _ in columns(df):
            row[key] = pool(list(g[g["score"] == key]["value"]))
        rows.append(row)
    return pd.DataFrame(rows)


def comparison(recs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """One wide table per setting: rows = priors (ceiling rows first), cells = Cell."""
    return [(meta, wide_table(members)) for meta, members in groups(recs)]


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


def as_text_frame(meta: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    cells = {"prior": table["prior"], "seeds": table["seeds"]}
    for key, head, dec, _ in table_columns(table):
        cells[head.format(extractor=meta["extractor"])] = [c.text(dec) for c in table[key]]
    return pd.DataFrame(cells)


Tables = list[tuple[dict[str, Any], pd.DataFrame]]  # (meta, wide table) per setting


def title(meta: dict[str, Any]) -> str:
    cond = "" if meta["condition"] == "none" else f", conditioned on {meta['condition']}"
    return (f"{scored_on(meta)} · preset {meta['preset']} · backbone {meta['backbone']} · "
            f"features {meta['extractor']} vs {meta['real_side']}{cond}")


def scored_on(meta: dict[str, Any]) -> str:
    """The dataset a table scores on; for re-scored runs (`bench score`), also the run the
    samples come from and the data it was trained on (fingerprints added if the names clash)."""
    if not meta.get("trained_on"):
        return meta["dataset"]
    data, source = meta["dataset"], meta["trained_on_name"]
    if data == source:
        data = f"{data} [{meta['data_fingerprint'][:8]}]"
        source = f"{source} [{meta['trained_on_fingerprint'][:8]}]"
    runs = meta.get("source_runs") or []
    which = f"run {runs[0]}" if len(runs) == 1 else f"{len(runs)} runs"
    return (f"{data} test split, samples of {which} trained on {source} (memorised: the run's "
            f"own score, against its training set)")


def backbone_line(meta: dict[str, Any]) -> str:
    """The backbone's own scores, said once above its table: no prior can beat its recon."""
    b, k = meta["backbone_scores"], meta["num_codes"]
    if not b:
        return f"Backbone {meta['backbone']}: recon and code usage scores not in these records"

    def num(key: str, decimals: int) -> str:
        return "?" if b.get(key) is None else f"{b[key]:.{decimals}f}"

    of_k = f" of K = {k}" if k else ""
    return (f"Backbone {meta['backbone']}: recon SSIM {num('recon_ssim', 3)}, "
            f"PSNR {num('recon_psnr', 2)} dB (whole test split); codes used "
            f"{num('train_distinct_codes', 0)} (train), {num('test_distinct_codes', 0)} (test)"
            f"{of_k}; perplexity {num('train_code_perplexity', 1)} (train), "
            f"{num('test_code_perplexity', 1)} (test)" + twins_clause(meta.get("twins") or {}))


def twins_clause(twins: dict[str, int]) -> str:
    """'; twins of training subjects (near-identical scans under two IDs): 3 in test, 10 in
    val', or '' when no held-out split has any."""
    held_out = [f"{twins[s]} in {s}" for s in ("test", "val") if twins.get(s)]
    return ("; twins of training subjects (near-identical scans under two IDs): "
            + ", ".join(held_out)) if held_out else ""


def markdown_table(meta: dict[str, Any], table: pd.DataFrame) -> list[str]:
    """The backbone line, then the table, as Markdown lines."""
    text = as_text_frame(meta, table)
    head = "| " + " | ".join(text.columns) + " |"
    rule = "|" + "|".join("---" if c == "prior" else "---:" for c in text.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in text.itertuples(index=False)]
    return [backbone_line(meta), "", head, rule, *body]


def to_markdown(tables: Tables) -> str:
    return "\n".join("\n".join([f"### {title(meta)}", "", *markdown_table(meta, table), ""])
                     for meta, table in tables)


def latex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("±", r"$\pm$")


def to_latex(tables: Tables) -> str:
    parts = []
    for meta, table in tables:
        text = as_text_frame(meta, table)
        cols = "l" + "r" * (len(text.columns) - 1)
        caption = latex_escape(f"{title(meta)}. {backbone_line(meta)}.")
        lines = [r"\begin{table}", r"\centering", f"\\caption{{{caption}}}",
                 f"\\begin{{tabular}}{{{cols}}}", r"\toprule",
                 " & ".join(latex_escape(c) for c in text.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(str(v)) for v in row) + r" \\"
                  for row in text.itertuples(index=False)]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def flat_setting(meta: dict[str, Any]) -> dict[str, Any]:
    """The csv / json fields every row of a setting shares: setting, K, the backbone's scores."""
    row: dict[str, Any] = {field: meta[key] for key, field in SETTING_FIELDS.items()}
    row["K"] = meta["num_codes"]
    for key, field in BACKBONE.items():
        row[field] = meta["backbone_scores"].get(key)
    return row


def to_flat(tables: Tables) -> pd.DataFrame:
    """Machine-readable: one row per (setting, prior), the same column names as the Markdown
    table, each score's 95% interval half-width in "<name> ci95"."""
    rows = []
    for meta, table in tables:
        for _, r in table.iterrows():
            row = flat_setting(meta) | {"prior": r["prior"], "seeds": r["seeds"],
                                        "device": r["device"]}
            for key, head, _, _ in table_columns(table):
                name = head.format(extractor=meta["extractor"])
                row[name] = r[key].mean
                row[f"{name} ci95"] = r[key].half_width
            rows.append(row)
    return pd.DataFrame(rows)


def write_all(tables: Tables, out: Path, stem: str = "comparison") -> list[Path]:
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


def record_backbone_line(record: dict[str, Any]) -> str:
    """`backbone_line` for one record (what `bench run` prints above its scores)."""
    return backbone_line({"backbone": record["backbone_hash"][:12],
                          "backbone_scores": record.get("backbone") or {},
                          "num_codes": record.get("num_codes"), "twins": record.get("twins")})
