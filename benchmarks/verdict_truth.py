"""The verdict against the truth of the model organism's stages.

    python benchmarks/verdict_truth.py --run runs/demo --organism runs/organism-cpu-small-seed0 \
        [--report /tmp/report-with-verdict] [--screenshot docs/figures/report-top.png]

Reads every result JSON of a demo run (or, while it runs, the cached results of its finished steps), computes the verdict of each tuned stage with this
checkout's code, and compares it with the truth the organism knows: the accuracy change
of the stage over the base on its leaked and its clean evaluation problems (from the
manifest). The truth of a stage's gain:

* ``no gain``: the accuracy over all evaluation problems rose by less than 0.05; the
  verdict must be *undetermined* (there is no gain to explain);
* ``memorization``: it rose, and by at least 0.10 more on leaked than on clean problems;
* ``reasoning``: it rose, and on clean problems at least as much as on leaked ones;
* ``mixed`` otherwise (then either *undetermined* or the larger share is acceptable).

Writes benchmarks/results/verdict_truth[-SUFFIX].json; with ``--report`` also a report of
the run's results with the verdict on top, and with ``--screenshot`` a PNG of its top.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlvr_lens.analyses.verdict import LABELS, build_verdict
from rlvr_lens.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"no gain": ("undetermined",), "memorization": ("memorization",), "reasoning": ("reasoning",),
            "mixed": ("undetermined", "memorization", "reasoning")}


def truth(accuracy: dict[str, dict[str, float]], stage: str, n: dict[str, int]) -> dict:
    base, tuned = accuracy["base"], accuracy[stage]
    # an organism built with zero leaks has no leaked problems: their change counts as 0
    leaked = tuned.get("eval_leaked", 0.0) - base.get("eval_leaked", 0.0)
    clean = tuned.get("eval_clean", 0.0) - base.get("eval_clean", 0.0)
    n_leaked, n_clean = n.get("n_leaked", 1), n.get("n_clean", 1)
    overall = (leaked * n_leaked + clean * n_clean) / max(1, n_leaked + n_clean)
    if overall < 0.05:
        label = "no gain"
    elif leaked >= clean + 0.10:
        label = "memorization"
    elif clean >= leaked:
        label = "reasoning"
    else:
        label = "mixed"
    return {"gain_leaked": round(leaked, 4), "gain_clean": round(clean, 4), "gain_all": round(overall, 4), "truth": label}


def _load_results(run: Path) -> list:
    from rlvr_lens.report.registry import _load_analysis_modules
    from rlvr_lens.results import Result

    _load_analysis_modules()

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    types = {cls.kind: cls for cls in subclasses(Result)}
    results = []
    # the report's result files, or (while a run is still going) the cached results of its finished steps
    for path in sorted(run.glob("*.json")) or sorted((run / "cache").glob("*.json")):
        data = json.loads(path.read_text())
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind in types and kind != "verdict":
            results.append(types[kind].from_dict(data))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="directory of a demo run (its *.json results)")
    parser.add_argument("--organism", required=True, help="organism directory (manifest.json)")
    parser.add_argument("--suffix", default="", help="suffix of the results file name")
    parser.add_argument("--report", default=None, help="also write a report with the verdict here")
    parser.add_argument("--screenshot", default=None, help="PNG of the top of that report")
    args = parser.parse_args()

    manifest = json.loads((Path(args.organism) / "manifest.json").read_text())
    accuracy = {s["name"]: s["accuracy"] for s in manifest["stages"]}
    results = _load_results(Path(args.run))
    verdict = build_verdict(results)
    rows = []
    for v in verdict.verdicts:
        if v.tuned not in accuracy or v.tuned == "base":
            continue
        row = {"stage": v.tuned, **truth(accuracy, v.tuned, manifest.get("sizes", {})), "verdict": v.verdict,
               "reason": v.reason, "signals": [f"{s.name}: {s.text}" for s in [*v.supporting, *v.contradicting, *v.inconclusive]]}
        row["agrees"] = v.verdict in EXPECTED[row["truth"]]
        rows.append(row)
        print(f"{v.tuned:<14} truth {row['truth']:<13} (gain leaked {row['gain_leaked']:+.2f}, clean {row['gain_clean']:+.2f})"
              f"  verdict {LABELS[v.verdict]:<14} {'agrees' if row['agrees'] else 'DISAGREES'}")
    name = f"verdict_truth{('-' + args.suffix) if args.suffix else ''}.json"
    atomic_write_json(ROOT / "benchmarks" / "results" / name, {
        "what": "verdict of each organism stage vs the truth from its leaked/clean accuracy change (see the script)",
        "run": str(args.run), "organism": str(args.organism), "preset": manifest.get("preset"), "seed": manifest.get("seed"),
        "rows": rows,
    })
    if args.report:
        from rlvr_lens.organism.manifest import OrganismManifest
        from rlvr_lens.report import write_run

        organism = [] if any(r.kind == "organism" for r in results) else [OrganismManifest.load_dir(args.organism)]
        path = write_run(args.report, [verdict, *organism, *results], title="rlvr-lens demo: auditing the model organism",
                         context=[f"results of {args.run}, verdict computed by benchmarks/verdict_truth.py"])
        print(f"report: {path}")
        if args.screenshot:
            from rlvr_lens.report.browser import screenshot

            print(f"screenshot: {screenshot(path, args.screenshot, width=1200, height=1400)}")


if __name__ == "__main__":
    main()
