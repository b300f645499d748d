"""Wall seconds of each stage of every prior run in a results folder (its own runs and the
records carried into it by `bench compare --from`), with the load the machine carried then,
as a markdown table: backbone training, the prior's fit, its test bits/code, sampling +
decoding, scoring.

    python scripts/stage_walls.py OUT

A load column gives the 1-minute load average before and after the stage, then the logical
cores: on C cores a run alone holds about its own threads; a load well above the cores means
other jobs shared them and the stage's time is not the run's alone ("-" where the record
predates these fields). The fit's CPU share is its CPU seconds over wall seconds x torch
threads, taken through the whole fit, each part resumed under its own thread count (the
backbone's too, where its record has it): about 1.0 alone, about 0.5 beside another job of as
many threads, which a load taken only before and after can miss.
"""
import sys
from pathlib import Path
from typing import Any

from bench import records


def load(pair: Any, cores: Any) -> str:
    if not pair or any(v is None for v in pair):
        return "-"
    return f"{pair[0]:.1f} / {pair[1]:.1f} of {cores}"


def seconds(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def share(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    recs = [r for r in records.collect(Path(sys.argv[1]), warn=lambda t: print(t, file=sys.stderr))
            if r["kind"] == "prior"]
    print("| prior | seed | commit | backbone s (load) | fit s (load) | fit CPU share | bits/code s | "
          "sampling s | scoring s | after the fit s (load) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(recs, key=lambda r: (r["prior"], r["seed"])):
        t, bb = r.get("timing") or {}, r.get("backbone_training") or {}
        cpu_share = (r.get("fit") or {}).get("train_cpu_share")
        cells = [r["prior"], r["seed"], r.get("versions", {}).get("commit") or "-",
                 f"{seconds(bb.get('train_wall_s'))} ({load(bb.get('load_avg'), bb.get('cpu_count'))})"
                 + ("" if bb.get("cpu_share") is None else f", CPU share {share(bb['cpu_share'])}"),
                 f"{seconds(r['scores'].get('fit_s'))} "
                 f"({load(t.get('fit_load_avg'), t.get('fit_cpu_count'))})",
                 share(cpu_share), seconds(t.get("bits_s")), seconds(t.get("sample_s")),
                 seconds(t.get("score_s")),
                 f"{seconds(t.get('after_fit_s'))} ({load(t.get('load_avg'), t.get('cpu_count'))})"]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
