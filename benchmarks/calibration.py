"""Calibration of the report's verdicts on simulated studies (docs/statistics.md, benchmarks/README.md).

For every regime of ``freezelab.report.calibration.REGIMES`` and n = 2, 3, 5 seeds: the share of null
studies (every arm and the baseline equal) with any better/worse verdict (a "best" claim included), for the
shipped method and for three naive ones (items only; hierarchical bootstrap over seeds then items; the
shipped scheme with seed effects taken as independent between arms), and the shipped method's power and
95 % interval coverage when one arm is better than the reference by 0.105, 0.15 or 0.3 in log units
(−10 %, −14 %, −26 % PPL or MSE), with the independent-seeds scheme's power at −10 % beside it. Prints a
Markdown table.

    python benchmarks/calibration.py --studies 1000          # the figures in benchmarks/README.md
    python benchmarks/calibration.py --studies 200 --regimes lm_seed_effect
"""

from __future__ import annotations

import argparse
import math
import time

from freezelab.report import calibration as C


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000, help="simulated studies per cell")
    ap.add_argument("--regimes", default="", help="comma-separated regime names (default: all)")
    ap.add_argument("--seeds", default="2,3,5", help="numbers of seeds")
    args = ap.parse_args()
    names = [r for r in args.regimes.split(",") if r] or [r.name for r in C.REGIMES]
    n_studies = args.studies
    se = math.sqrt(0.05 * 0.95 / n_studies)
    print(f"{n_studies} studies per cell; Monte-Carlo SE of a 5 % rate: {100 * se:.1f} pt\n")
    print("| regime | seeds | false better/worse: shipped | items only | hier. bootstrap | independent seeds | "
          "power −10 % | (indep. seeds) | power −14 % | power −26 % | coverage (95 %) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        regime = C.regime(name)
        for n in (int(x) for x in args.seeds.split(",")):
            t0 = time.time()
            rates = [C.false_rate(regime, n, n_studies, m)
                     for m in ("shipped", "items_only", "hierarchical", "independent_seeds")]
            p10, _ = C.effect_rates(regime, n, n_studies, 0.105)
            p10i, _ = C.effect_rates(regime, n, n_studies, 0.105, method="independent_seeds")
            p15, _ = C.effect_rates(regime, n, n_studies, 0.15)
            p30, cov = C.effect_rates(regime, n, n_studies, 0.3)
            cells = [f"{100 * r:.1f} %" for r in (*rates, p10, p10i, p15, p30, cov)]
            print(f"| {name} | {n} | " + " | ".join(cells) + f" |  <!-- {time.time() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
