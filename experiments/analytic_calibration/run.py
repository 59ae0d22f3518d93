"""Refit the analytic cost model to the public measurements and print the validation table.

    python experiments/analytic_calibration/run.py            # refit, rewrite the constants and the doc table
    python experiments/analytic_calibration/run.py --check    # recompute from the committed constants; exit 1
                                                              # if the doc table or the fit summary differ

The fit uses the points of specsim/profiler/calibration_data.json marked "fit"; the table reports the error
on the points marked "holdout", for the calibrated model and for the uncalibrated roofline. Writes
specsim/profiler/calibration_fit.json (constants + error summary) and the generated block of
docs/analytic-calibration.md. Takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from specsim.profiler import calibrate as C
    from specsim.profiler.stepmodel import FIT_PATH, Calibration

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="do not refit: verify the committed table and summary")
    args = ap.parse_args()

    points = C.load_points()
    doc_path = ROOT / C.DOC_PATH
    if args.check:
        cal = Calibration.from_dict(json.loads(FIT_PATH.read_text())["params"])
    else:
        cal = C.fit(points)
    report = C.fit_report(points, cal)
    tables = C.render_tables(points, cal)
    print(tables)
    h = report["holdout"]
    print(f"held-out ({h['points']} points): uncalibrated mean {h['uncalibrated_mean']:.1%} max "
          f"{h['uncalibrated_max']:.1%}; calibrated mean {h['calibrated_mean']:.1%} max {h['calibrated_max']:.1%}")
    if args.check:
        committed = json.loads(FIT_PATH.read_text())
        ok = C.generated_block(doc_path.read_text()) == tables and all(
            committed[k] == report[k] for k in ("params", "holdout", "fit", "data_sha256"))
        print("committed table and summary match" if ok else "MISMATCH: rerun without --check")
        return 0 if ok else 1
    C.write_fit(report)
    doc_path.write_text(C.splice(doc_path.read_text(), tables))
    print(f"wrote {FIT_PATH.relative_to(ROOT)} and {C.DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
