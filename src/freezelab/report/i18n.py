"""Report strings in English and Japanese, the glossary, and the literature context box (protocol §8).

Japanese follows the seed reports' vocabulary (実験概要, 実験条件, 比較分析, 結論, 凍結, 解凍, 学習パラメータ,
最良エポック), except that a relative change is 相対変化, never 改善率: its sign is read with the metric's
direction (negative = better for PPL and MSE), and only a verdict says 改善 or 悪化.
Strings hold words only; every number is formatted once by the caller
with the same function for both languages, so the two reports carry identical numbers.
"""

from __future__ import annotations

from freezelab.errors import ConfigError

LANGS = ("en", "ja")

GLOSSARY: list[tuple[str, str]] = [
    ("frozen", "凍結"), ("unfrozen", "解凍"), ("trainable parameters", "学習パラメータ"),
    ("relative change (Δ%; its sign is read with the metric's direction)", "相対変化"),
    ("better / worse (the verdict)", "改善 / 悪化"), ("best epoch", "最良エポック"), ("overview", "実験概要"),
    ("settings", "実験条件"), ("comparison", "比較分析"), ("conclusion", "結論"), ("arm", "アーム（条件）"),
    ("seed", "シード"), ("reference arm", "基準アーム"), ("confidence interval", "信頼区間"),
    ("naive baseline", "単純ベースライン"), ("early stopping", "早期停止"), ("failed", "失敗"),
]

EN: dict[str, str] = {
    "title": "freezelab report: {study}",
    "generated": "Generated {when} from {n_runs} run folders in `{out}` (task `{task}`; {n_arms} arms × {n_seeds} seeds{missing}; reference arm `{ref}`).",  # noqa: E501
    "overview": "Overview", "purpose": "Purpose", "hypothesis": "Hypothesis",
    "purpose_auto": "Compare {n_arms} arms of study `{study}` with the reference arm `{ref}` on {metrics}, over seeds {seeds}.",  # noqa: E501
    "hypothesis_auto": "Each arm differs from `{ref}` on {metric}; H0: no difference (paired over seeds).",
    "result_none": "No arm has a finished run with {metric}; see the failures section.",
    "no_epochs": "No epoch was logged by a succeeded run of this arm.",
    "headline_warnings": "Headline warnings",
    "context": "Context from the literature", "context_note": "How large, and how contested, published effects are (protocol §8).",  # noqa: E501
    "ctx_work": "Work", "ctx_setting": "Setting", "ctx_result": "Reported result",
    "settings": "Settings", "environment": "Environment", "key": "Key", "value": "Value",
    "base_config": "Base configuration", "arms": "Arms", "arm": "Arm", "description": "Description",
    "diff_base": "Resolved diff from base", "frozen_groups": "Frozen groups", "trained_groups": "Trained groups",
    "seeds_ok": "Seeds (ok/all)", "data_sizes": "Data sizes (from summary.json)",
    "full_diff": "Full resolved diff of `{arm}` (key: base → arm)", "base_value": "Base", "arm_value": "Arm",
    "no_diff": "(identical to base)", "reference_mark": "reference", "seeds": "Seeds", "data": "Data and hashes",
    "hash": "Hash", "equal": "Equal across arms", "yes": "yes", "no": "NO (confound)",
    "not_applicable": "not applicable (no pretrained weights)", "per_arm": "per arm",
    "params": "Trainable parameters", "total": "Total", "trainable": "Trainable", "frozen": "Frozen",
    "tied": "Tied", "unused": "Unused", "share": "Trainable share", "tok_per_param": "Train tokens (windows) / trainable param",  # noqa: E501
    "chinchilla": "Chinchilla-style check: about 20 training tokens per trainable parameter is compute-optimal; below 1 the trainable set is far larger than the data (the seed report's argument for freezing).",  # noqa: E501
    "epochs": "Per-arm epoch tables", "epochs_note": "Mean ± std over succeeded seeds at each epoch; n = seeds still active; ★k = epoch selected as best by k seeds. Log-scale metrics (PPL) use the geometric mean.",  # noqa: E501
    "phase1_summary": "Phase 1 (convergence and effective rank, mean ± std over seeds)",
    "epoch": "Epoch", "n": "n", "phase1": "Phase 1 iterations", "phase1_same_as": "Phase 1: identical to `{arm}` (shown there).", "iteration": "Iteration",  # noqa: E501
    "best_epoch": "Best epoch", "selection": "Selection rule: {metric} ({mode}) on val; test metrics are scored once with the best-epoch weights.",  # noqa: E501
    "seed": "Seed", "status": "Status", "epochs_run": "Epochs run / max", "per_seed": "Best epoch and metrics per run",  # noqa: E501
    "comparison": "Comparison",  # noqa: E501
    "mean_std": "Mean ± std", "ci": "95 % CI",  # noqa: E501
    "p": "p / p Holm", "p_raw": "p (unadjusted, descriptive)", "verdict": "Verdict", "log_note": "log-scale: geometric mean, Δ from log differences",  # noqa: E501
    "baseline": "Best baseline",
    "convergence": "Convergence speed (val metrics at epochs {epochs})", "metric": "Metric",
    "paired_details": "Per-seed paired differences on {metric}",
    "per_unit": "Per-timeframe metrics at the best epoch (mean ± std over seeds)", "ref_value": "Reference",
    "runtime": "Runtime", "wall": "Wall time", "s_epoch": "s / epoch", "steps": "Steps",
    "throughput": "Tokens (or windows) / s", "peak_mem": "Peak memory", "saved": "saved",
    "plots": "Plots", "tensorboard": "TensorBoard: `{cmd}`",
    "plot_curves": "Learning curves of {metric} (mean line, ±1 std band, thin per-seed lines)",
    "plot_grad": "Gradient norm per parameter group (mean over seeds)",
    "plot_corr": "Per-timeframe validation correlation at the best epoch",
    "plot_params": "Trainable parameters vs {metric}", "plot_phase1": "Phase 1 iterations",
    "failures": "Failures and warnings", "failed_runs": "Failed or incomplete runs", "no_failures": "Every run succeeded.",  # noqa: E501
    "traceback": "Traceback tail", "log_tail": "Log tail", "last_metrics": "Last metrics",
    "at": "at epoch {epoch}, step {step}", "signal": "Process", "error_code": "Failure code",
    "warnings": "Warnings", "no_warnings": "No warning: hashes agree, all seeds finished, no invariant issue.",  # noqa: E501
    "invariants": "Invariants", "frozen_ok": "Frozen unchanged", "dead": "Dead tensors", "inv_warn": "Invariant warnings",  # noqa: E501
    "conclusion": "Conclusion", "caveats": "Read with the {n} warnings at the top of the report.",
    "warnings_above": "The {n} warnings are listed once, next to the arm they concern, at the top of the report.",
    "tune_title": "Learning rate chosen on validation",
    "tune_note": "Each arm was compared at its own {lr_key}, chosen before the comparison: one trial per learning rate (seeds {seeds}, the same for every arm; {budget} epochs each), the one with the best {metric} (validation; the test split was not read) wins (*). The comparison above ran every seed at that learning rate.",  # noqa: E501
    "tune_h_chosen": "Chosen lr", "tune_h_curve": "{metric} per lr (mean over trial seeds)", "tune_h_edge": "Edge of the grid",  # noqa: E501
    "tune_failed": "failed", "tune_edge_low": "lowest value: widen tune.lr downwards", "tune_edge_high": "highest value: widen tune.lr upwards",  # noqa: E501
    "tune_edge_None": "at the edge",
    "w_lr_at_edge": "`{arm}`: the learning rate chosen on validation ({lr}) is the {side} value of its grid ({lo}–{hi}); a better one may lie outside it: widen tune.lr.",  # noqa: E501
    "w_side_low": "lowest", "w_side_high": "highest",
    "plot_lr": "Learning rate chosen on validation: each arm's best {metric} per trial learning rate (mean over trial seeds; ○ = chosen). The comparison ran every seed at the chosen one.",  # noqa: E501
    "pl_lr": "learning rate",
    "seq_title": "Seeds until decided",
    "seq_note": "This study added seeds until every arm was decided against `{ref}` by an anytime-valid test: a safe t-test on the per-seed differences of {metric} (an e-value of at least {m}/α = {thr:g} decides; its error rate α = {alpha:g} holds however often it was looked at and whenever the seeds stopped, docs/statistics.md). It stopped after {n} seeds: {why}. The intervals in the rest of this report are fixed-n ones and only descriptive after such stopping; these decisions are the ones to cite.",  # noqa: E501
    "seq_decided": "every arm decided", "seq_max_seeds": "--max-seeds {max} reached with {k} arm(s) not decided",
    "seq_failed": "a run failed or was held elsewhere", "seq_running": "still running",
    "seq_h_seeds": "Seeds", "seq_h_delta": "Mean per-seed Δ", "seq_h_e": "e-value", "seq_h_need": "Needed",
    "seq_h_decision": "Decision", "seq_h_first": "Decided at (seeds)",
    "seq_v_better": "better", "seq_v_worse": "worse", "seq_v_undecided": "not decided",
    "seq_looks": "Every look: e-value of each arm after each seed count",
    "seq_bad": "{problem}",
    "power_line": "**Power** (`{arm}` vs `{ref}`, {verdict}): with {n} seeds the interval rules out changes beyond {lo} and {hi}; {advice}.",  # noqa: E501
    "power_seeds": "an effect of ±{h} would be decided (80 % power) with about {k} seeds", "power_never": "no number of seeds would decide an effect of ±{h}: the evaluation set's item noise alone is too large (more evaluation items are needed)",  # noqa: E501
    "best_line": "**Best arm vs runner-up** on {metric}: `{best}` vs `{second}`: {cell} [Holm] → {verdict}. \"Best\" is claimed only when this interval excludes 0.",  # noqa: E501
    "reproduction": "Reproduction", "repro_note": "Commands recorded in run.json, then the report:",
    "config_hash": "Config hash", "glossary": "Glossary", "failed_cell": "FAILED",
    "reference": "reference",
    "conclusion_line": "`{arm}` vs `{ref}`: {metric} {m_a}±{s_a} vs {m_r}±{s_r} (n={n}); paired Δ {d} [{lo}, {hi}] → {verdict}.",  # noqa: E501
    "refmodel_better": "**Is CVFP competitive at the same trainable budget?** No: the {kind} reference `{arm}` ({trainable} trainable parameters vs {cvfp} of the CVFP arm `{ref}`) is better on {metric}, Δ {d} [{lo}, {hi}] ({verdict}).",  # noqa: E501
    "refmodel_worse": "**Is CVFP competitive at the same trainable budget?** Yes: the CVFP arm `{ref}` beats the {kind} reference `{arm}` ({trainable} trainable parameters vs {cvfp}) on {metric}, Δ {d} [{lo}, {hi}] ({verdict}).",  # noqa: E501
    "refmodel_same": "**Is CVFP competitive at the same trainable budget?** Yes, no more: the CVFP arm `{ref}` and the {kind} reference `{arm}` ({trainable} trainable parameters vs {cvfp}) do not differ on {metric}, Δ {d} [{lo}, {hi}] ({verdict}).",  # noqa: E501
    "refmodel_open": "**Is CVFP competitive at the same trainable budget?** Not decided: the {kind} reference `{arm}` ({trainable} trainable parameters vs {cvfp} of `{ref}`) vs the CVFP arm on {metric}: Δ {d} [{lo}, {hi}] ({verdict}).",  # noqa: E501
    "w_confound_hash": "CONFOUND: `{hash}` differs across arms ({groups}){budget}; these arms were not given the same data, evaluation or budget.",  # noqa: E501
    "w_budget": "; budget_hash covers max steps/epochs, batch size, eval cadence and the stopping rule",
    "w_confound_precision": "CONFOUND: runs used different precisions ({values}).",
    "w_allow_confound": "CONFOUND: overrides protected keys ({keys}) via allow_confound.",
    "w_single_seed": "Single seed ({seed}): no variance estimate; differences cannot be told from run-to-run noise.",  # noqa: E501
    "w_failed_seeds": "only {n}/{total} seeds finished ({runs}); its statistics use n={n}.",
    "w_no_ci": "n={n} succeeded seeds: no CI and no paired test.",
    "w_unequal_n": "Unequal n across arms ({counts}).",
    "w_best_first": "best epoch = first epoch (selection noise or immediate overfitting)",
    "w_best_last": "best epoch = last allowed epoch (budget-limited; more epochs may help)",
    "w_train_val_gap": "val loss exceeds train loss by {gap} at the best epoch (large train/val gap)",
    "w_non_finite": "non-finite values in {keys}",
    "w_skipped_steps": "{count} steps skipped for non-finite gradients",
    "w_frozen_changed": "INVARIANT: a frozen tensor changed",
    "w_dead_tensors": "trainable tensors never changed: {names}",
    "w_remote_code": "ran Python code shipped with its pretrained model (trust_remote_code: true)",
    "w_invariant_warning": "invariant warning: {text}",
    "w_phase1_not_converged": "Phase 1 stopped before converging in {arms}: {ratio} of tokens converged after {iterations} iterations (threshold {threshold}); their contexts are not fixed points",  # noqa: E501
    "w_unfreeze_short": "trained unfrozen for {epochs} epoch(s) (from epoch {epoch}); under {minimum}, what unfreezing does is not measured",  # noqa: E501
    "w_unfreeze_low_lr": "unfrozen {groups} trained at an applied lr of at most {lr} (below {minimum}): the pretrained tensors barely moved",  # noqa: E501
    "w_best_before_unfreeze": "selected epoch {best} precedes the unfreezing (epoch {epoch}): the reported weights never trained unfrozen",  # noqa: E501
    "w_run_warning": "run warning: {text}", "w_load_warning": "data warning: {text}",
    "w_seeds": "seeds {seeds}",
    "w_seed": "seed {seeds}",
    "w_every_seed": "every seed",
    "w_every_arm": "Every arm",
    "w_except": "not {which}",
    "w_capacity": "Trainable parameters differ {ratio}× between `{hi}` ({hi_n}) and `{lo}` ({lo_n}): a capacity difference, for information.",  # noqa: E501
    "w_same_split": "{metric}: no test metric was recorded, so selection and reporting use the same val split (optimistic).",  # noqa: E501
    "w_superseded": "run `{run_id}` is superseded by a newer config and ignored",
    "w_problem": "{text}", "w_run_problem": "`{run_id}`: {text}",
    # first screen, verdicts and their words (headline.py); every verdict is read off the printed interval
    "missing_pairs": "; {k} of these {n} arm × seed runs have no run folder",
    "rep_group": "Group", "rep_hashes": "data / split / eval hash",
    "rep_arms_title": "**Every arm of the study** ({runs} run folders, {arms} arms × {seeds} seeds): what it changes from the base, its runs, time and data.",  # noqa: E501
    "answer": "Answer:", "answer_is_ref": " (the reference)",
    "answer_best": "`{best}`{ref} is the best arm on {metric} ({dir}): {value}; better than the runner-up `{second}` by {cell} [Holm].",  # noqa: E501
    "answer_tie": "No arm is shown to be best on {metric} ({dir}): `{best}`{ref} has the best mean, {value}, but is not distinguishable from the runner-up `{second}`: {cell} [Holm].",  # noqa: E501
    "answer_single": "`{best}`{ref} is the only arm with a result on {metric} ({dir}): {value}.",
    "answer_no_skill_all": "No arm beats the naive baseline `{b}` on {metric} ({dir}): `{b}` scores {value}, the arms {lo}–{hi}; all {n} arms are worse than it (no skill).",  # noqa: E501
    "answer_no_skill": "No arm is shown to beat the naive baseline `{b}` on {metric} ({dir}): `{b}` scores {value}, the arms {lo}–{hi}; {k} of {n} arms are worse than it (no skill), the others are not distinguishable from it.",  # noqa: E501
    "answer_no_skill_none": "No arm is shown to beat the naive baseline `{b}` on {metric} ({dir}): `{b}` scores {value}, the arms {lo}–{hi}; none is distinguishable from it.",  # noqa: E501
    "answer_vs_ref": "Against the reference `{ref}`: {groups}.",
    "answer_vs_base": "Against the best naive baseline `{b}` ({value}): {groups}.",
    "basis_items": "({n} seeds × {items} test items; bootstrap over the items within seeds plus the seed-to-seed variance of the paired differences, pooled over arms (df {df}); intervals Holm-adjusted over {m} comparisons.)",  # noqa: E501
    "basis_blocks": "({n} seeds × {items} test items; block bootstrap over the items (blocks of {block} contiguous items) within seeds plus the seed-to-seed variance of the paired differences, pooled over arms (df {df}); intervals Holm-adjusted over {m} comparisons.)",  # noqa: E501
    "basis_seeds": "({n} seeds, seed-level statistics only: no per-item scores; seed-to-seed variance of the paired differences pooled over arms (df {df}); intervals Holm-adjusted over {m} comparisons.)",  # noqa: E501
    "dir_min": "lower is better", "dir_max": "higher is better",
    "dir_rel_min": "relative change, negative = better", "dir_rel_max": "relative change, positive = better",
    "dir_diff_min": "difference, negative = better", "dir_diff_max": "difference, positive = better",
    "g_better": "better", "g_worse": "worse", "g_inconclusive": "inconclusive", "g_no_difference": "no detectable difference",  # noqa: E501
    "g_insufficient": "not testable",
    "gb_better": "better than it", "gb_worse": "worse than it (no skill)", "gb_inconclusive": "inconclusive",
    "gb_no_difference": "not distinguishable", "gb_insufficient": "not testable",
    "v_better": "better", "v_worse": "worse", "v_inconclusive": "inconclusive", "v_no_difference": "no detectable difference",  # noqa: E501
    "v_insufficient": "not testable",
    "b_better": "better than `{b}`", "b_worse": "worse than `{b}`: no skill", "b_inconclusive": "inconclusive vs `{b}`",
    "b_no_difference": "not distinguishable from `{b}`", "b_insufficient": "not testable",
    "why_insufficient": "n = {n}: the seed-to-seed variation is unknown", "seed_count": "{k}/{n} seeds",
    "bs_better": "better", "bs_worse": "worse: no skill", "bs_inconclusive": "inconclusive",
    "bs_no_difference": "not distinguishable", "bs_insufficient": "not testable",
    "inconclusive_fact": "{word}: {fact} but n = {n}", "seed_fact": "{side} in {k}/{n} seeds",
    "side_better": "better", "side_worse": "worse",
    "h_value": "{metric} [95 %]", "h_vs_ref": "vs `{ref}` ({dir}) [Holm]", "h_vs_base": "vs `{b}` [Holm]",
    "h_time": "Time / run (min–max)", "baseline_col": "Naive baseline (same test items)",
    "compared_baseline": "compared with every arm",
    "cold_note": "‡ includes the study's first run, which is cold (imports, data loading, shared caches).",
    "profile_title": "Smoke test: profile {profiles}",
    "profile_banner": "{n} of {total} runs used the study profile {profiles} (`--profile`), which shrinks data and budget to check the machinery: the numbers below are a smoke test, not a result. Run the study without `--profile` for its own settings.",  # noqa: E501
    "plot_first": "{metric} per arm, the metric the verdicts use: mean with its 95 % interval (items and seeds), dots = single seeds; dashed: naive baselines",  # noqa: E501
    "plot_overlay_title": "validation {metric} (the selection split; the verdicts use {test})",
    "headline_note": "[95 %]: the arm's mean with item and seed uncertainty. [Holm]: the interval the verdict is read from (Holm-adjusted over every comparison on this metric): a verdict says better or worse only when it excludes 0. Seed counts are descriptive. Scheme: docs/statistics.md.",  # noqa: E501
    "plot_overlay": "Validation {metric} of every arm over epochs (mean line, ±1 std band over seeds, thin per-seed lines); dashed: naive baselines",  # noqa: E501
    "comparison_note_items": "Primary metric {metric}: each arm vs `{ref}`, vs the best naive baseline and the best arm vs the runner-up, on the same {items} test items and seeds. Uncertainty = item bootstrap within seeds (blocks of {block} contiguous items) + seed-to-seed variance: for two arms, of their per-seed differences (arms of one seed share its data order and initialisation), pooled over {arms} arms as the arm × seed residual (df {df}); against a baseline, the arm's own seed variance pooled over arms (sd {pooled}, df {pooled_df}); a pair or arm noisier than the pool keeps its own. t intervals with Welch–Satterthwaite df, Holm-adjusted over the {m} comparisons: the interval excludes 0 exactly when the Holm p < 0.05. Other metrics: descriptive 95 % intervals, no verdict. † = some seeds did not finish.",  # noqa: E501
    "comparison_note_seeds": "Primary metric {metric}: no per-item scores, so seed-level statistics only: the per-seed differences of two arms pooled over {arms} arms as the arm × seed residual (df {df}), against a baseline the arm's seed variance pooled over arms (sd {pooled}, df {pooled_df}), baselines taken as exact constants; t intervals Holm-adjusted over the {m} comparisons (the verdict is read off the interval). Other metrics: descriptive. † = some seeds did not finish.",  # noqa: E501
    "primary_mark": "primary: verdicts", "descriptive_mark": "descriptive",
    "holm_ci": "[Holm]", "delta": "Δ", "delta_pct": "relative change", "per_seed_d": "per seed",
    "plot_final": "{metric} per arm: mean with its 95 % interval (items and seeds) and per-seed dots; dashed: best naive baseline",  # noqa: E501
    "plot_paired": "{metric} against `{ref}`: per-seed differences (dots) and the Holm interval the verdict is read from",  # noqa: E501
    "pl_epoch": "epoch", "pl_iteration": "Phase-1 iteration", "pl_baseline": "naive baseline",
    "pl_seed_lines": "thin lines: single seeds; band: ±1 std", "pl_seed_dots": "single seeds",
    "pl_interval": "95 % interval", "pl_holm_interval": "difference [Holm interval]",
    "pl_delta": "{metric} vs {ref} ({unit}, {better})",
    "pl_neg_better": "negative = better",
    "pl_pos_better": "positive = better",
    "pl_grad": "gradient norm (pre-clip)",
    "pl_timeframe": "timeframe",
    "pl_corr": "val Pearson r (best epoch)", "pl_trainable": "trainable parameters",
    "lower_better": "lower is better", "higher_better": "higher is better",
    "unit_nats": "nats / token", "unit_percent": "%", "unit_bpb": "bits / byte", "unit_huber": "masked Huber",
    "unit_norm2": "normalised²", "unit_bp2": "bp²",
    "w_seed_level": "{metric}: seed-level statistics only ({text}); baselines are taken as exact constants.",
    "w_below_baseline": "no skill on {metric}: its interval lies wholly on the worse side of `{baseline}` ({value})",  # noqa: E501
    "w_not_above_baseline": "not shown to be better than `{baseline}` ({value}) on {metric}: its interval includes no difference",  # noqa: E501
}

JA: dict[str, str] = {
    "title": "freezelab 実験レポート: {study}",
    "generated": "{when} に `{out}` の {n_runs} 個のランフォルダから生成（タスク `{task}`、{n_arms} アーム × {n_seeds} シード{missing}、基準アーム `{ref}`）。",  # noqa: E501
    "overview": "実験概要", "purpose": "目的", "hypothesis": "仮説",
    "purpose_auto": "研究 `{study}` の {n_arms} アームを基準アーム `{ref}` と {metrics} で比較する（シード {seeds}）。",  # noqa: E501
    "hypothesis_auto": "各アームは `{ref}` と {metric} が異なる。帰無仮説: 差なし（シード対応比較）。",
    "result_none": "{metric} を持つ完了ランがどのアームにもない。失敗の節を参照。",
    "no_epochs": "このアームの成功ランにエポック記録がない。",
    "headline_warnings": "重要な警告",
    "context": "先行研究との関係", "context_note": "公表された効果の大きさと、その議論の余地（プロトコル §8）。",
    "ctx_work": "文献", "ctx_setting": "設定", "ctx_result": "報告結果",
    "settings": "実験条件", "environment": "実行環境", "key": "項目", "value": "設定",
    "base_config": "ベース設定", "arms": "アーム", "arm": "アーム", "description": "説明",
    "diff_base": "ベースとの差分", "frozen_groups": "凍結グループ", "trained_groups": "学習グループ",
    "seeds_ok": "シード（成功/全体）", "data_sizes": "データ量（summary.json より）",
    "full_diff": "`{arm}` の差分（項目: ベース → アーム）", "base_value": "ベース", "arm_value": "アーム",
    "no_diff": "（ベースと同一）", "reference_mark": "基準", "seeds": "シード", "data": "データとハッシュ",
    "hash": "ハッシュ", "equal": "アーム間で一致", "yes": "一致", "no": "不一致（交絡）",
    "not_applicable": "該当なし（事前学習重みなし）", "per_arm": "アームごと",
    "params": "学習パラメータ数の比較", "total": "全パラメータ", "trainable": "学習パラメータ", "frozen": "凍結",
    "tied": "共有（tied）", "unused": "未使用", "share": "割合",
    "tok_per_param": "訓練トークン（ウィンドウ）/ 学習パラメータ",
    "chinchilla": "Chinchilla則との整合性: 学習パラメータ 1 個あたり約 20 トークンが計算最適。1 未満ではデータに対して学習パラメータが過大（シードレポートが凍結を推す根拠）。",  # noqa: E501
    "epochs": "アーム別エポック結果", "epochs_note": "各エポックで成功シードの平均 ± 標準偏差。n = そのエポックまで継続したシード数、★k = k シードで最良エポック。対数尺度の指標（PPL）は幾何平均。",  # noqa: E501
    "phase1_summary": "Phase 1 結果（収束と Effective Rank、シード平均 ± 標準偏差）",
    "epoch": "エポック", "n": "n", "phase1": "Phase 1 イテレーション", "phase1_same_as": "Phase 1: `{arm}` と同一（そちらに表示）。", "iteration": "イテレーション",  # noqa: E501
    "best_epoch": "最良エポック", "selection": "選択規則: val の {metric}（{mode}）。test 指標は最良エポックの重みで 1 回だけ評価。",  # noqa: E501
    "seed": "シード", "status": "ステータス", "epochs_run": "実行エポック / 最大", "per_seed": "ラン別の最良エポックと指標",  # noqa: E501
    "comparison": "比較分析",  # noqa: E501
    "mean_std": "平均 ± 標準偏差", "ci": "95 % CI",
    "p": "p / Holm p", "p_raw": "p（未調整・記述的）", "verdict": "判定", "log_note": "対数尺度: 幾何平均、Δ は対数差から",  # noqa: E501
    "baseline": "最良ベースライン",
    "convergence": "収束速度比較（エポック {epochs} の val 指標）", "metric": "指標",
    "paired_details": "{metric} のシード別対応差",
    "per_unit": "最良エポックでの時間足別指標（シード平均 ± 標準偏差）", "ref_value": "基準",
    "runtime": "計算効率", "wall": "実行時間", "s_epoch": "秒 / エポック", "steps": "ステップ",
    "throughput": "トークン（ウィンドウ）/ 秒", "peak_mem": "ピークメモリ", "saved": "早期停止で削減",
    "plots": "グラフ", "tensorboard": "TensorBoard: `{cmd}`",
    "plot_curves": "{metric} の学習曲線（平均線、±1 標準偏差の帯、細線は各シード）",
    "plot_grad": "パラメータグループ別の勾配ノルム（シード平均）",
    "plot_corr": "最良エポックでの時間足別 val 相関",
    "plot_params": "学習パラメータ数と {metric}", "plot_phase1": "Phase 1 イテレーション",
    "failures": "失敗と警告", "failed_runs": "失敗・未完了のラン", "no_failures": "すべてのランが成功。",
    "traceback": "トレースバック末尾", "log_tail": "ログ末尾", "last_metrics": "最後の指標",
    "at": "エポック {epoch}、ステップ {step} で発生", "signal": "プロセス", "error_code": "失敗コード",
    "warnings": "警告", "no_warnings": "警告なし: ハッシュ一致、全シード完了、不変条件の問題なし。",
    "invariants": "不変条件", "frozen_ok": "凍結テンソル不変", "dead": "更新されないテンソル", "inv_warn": "不変条件の警告",  # noqa: E501
    "conclusion": "結論", "caveats": "レポート冒頭の警告（{n} 件）に留意。",
    "warnings_above": "{n} 件の警告は、レポート冒頭で該当するアームの横に 1 回ずつ示した。",
    "tune_title": "検証で選んだ学習率",
    "tune_note": "各アームは比較の前に選んだ自分の {lr_key} で比較した: 学習率ごとに 1 試行（シード {seeds}、全アーム共通。各 {budget} エポック）、{metric}（検証。テスト分割は読まない）が最良のものを採用（*）。上の比較は全シードをその学習率で実行した。",  # noqa: E501
    "tune_h_chosen": "選んだ lr", "tune_h_curve": "lr ごとの {metric}（試行シードの平均）", "tune_h_edge": "グリッドの端",  # noqa: E501
    "tune_failed": "失敗", "tune_edge_low": "最小値: tune.lr を下に広げる", "tune_edge_high": "最大値: tune.lr を上に広げる",  # noqa: E501
    "tune_edge_None": "端",
    "w_lr_at_edge": "`{arm}`: 検証で選んだ学習率（{lr}）がグリッド（{lo}–{hi}）の{side}値である。より良い値が外にあるかもしれない: tune.lr を広げる。",  # noqa: E501
    "w_side_low": "最小", "w_side_high": "最大",
    "plot_lr": "検証で選んだ学習率: 各アームの試行学習率ごとの最良 {metric}（試行シードの平均。○ = 採用）。比較は全シードを採用した学習率で実行した。",  # noqa: E501
    "pl_lr": "学習率",
    "seq_title": "判定までシードを追加",
    "seq_note": "この研究は、すべてのアームが `{ref}` に対して判定されるまで、いつ止めても有効な検定でシードを追加した: {metric} のシード別の差に対する safe t 検定（e 値が {m}/α = {thr:g} 以上で判定; 何度見ても、どこでシード追加を止めても誤り率 α = {alpha:g} が保たれる。docs/statistics.md）。{n} シードで停止: {why}。本レポートの他の区間は固定 n のもので、このような停止の後では記述的にすぎない。引用すべきはこの判定である。",  # noqa: E501
    "seq_decided": "全アームが判定済み", "seq_max_seeds": "--max-seeds {max} に到達、{k} アームが未判定",
    "seq_failed": "ランが失敗した、または別プロセスが保持", "seq_running": "実行中",
    "seq_h_seeds": "シード数", "seq_h_delta": "シード別 Δ の平均", "seq_h_e": "e 値", "seq_h_need": "必要な値",
    "seq_h_decision": "判定", "seq_h_first": "判定時のシード数",
    "seq_v_better": "良い", "seq_v_worse": "悪い", "seq_v_undecided": "未判定",
    "seq_looks": "各時点: シード数ごとの各アームの e 値",
    "seq_bad": "{problem}",
    "power_line": "**検出力**（`{arm}` 対 `{ref}`、{verdict}）: {n} シードの区間は {lo} と {hi} を超える変化を除外する。{advice}。",  # noqa: E501
    "power_seeds": "±{h} の効果を（検出力 80 % で）判定するには約 {k} シードが必要", "power_never": "±{h} の効果は何シードでも判定できない: 評価集合の項目ノイズだけで大きすぎる（評価項目を増やす必要がある）",  # noqa: E501
    "best_line": "**最良アーム 対 次点**（{metric}）: `{best}` 対 `{second}`: {cell} [Holm] → {verdict}。区間が 0 を含まないときだけ「最良」と言う。",  # noqa: E501
    "reproduction": "再現方法", "repro_note": "run.json に記録されたコマンドと、レポート生成コマンド:",
    "config_hash": "設定ハッシュ", "glossary": "用語集", "failed_cell": "FAILED",
    "reference": "基準",
    "conclusion_line": "`{arm}` 対 `{ref}`: {metric} {m_a}±{s_a} vs {m_r}±{s_r} (n={n})、対応差 Δ {d} [{lo}, {hi}] → {verdict}。",  # noqa: E501
    "refmodel_better": "**同じ学習パラメータ数で CVFP は競争力があるか。** ない: {kind} 参照モデル `{arm}`（学習パラメータ {trainable}、CVFP 群 `{ref}` は {cvfp}）が {metric} でより良い。Δ {d} [{lo}, {hi}]（{verdict}）。",  # noqa: E501
    "refmodel_worse": "**同じ学習パラメータ数で CVFP は競争力があるか。** ある: CVFP 群 `{ref}` が {kind} 参照モデル `{arm}`（学習パラメータ {trainable}、CVFP は {cvfp}）より {metric} で良い。Δ {d} [{lo}, {hi}]（{verdict}）。",  # noqa: E501
    "refmodel_same": "**同じ学習パラメータ数で CVFP は競争力があるか。** 同等: CVFP 群 `{ref}` と {kind} 参照モデル `{arm}`（学習パラメータ {trainable}、CVFP は {cvfp}）は {metric} で差がない。Δ {d} [{lo}, {hi}]（{verdict}）。",  # noqa: E501
    "refmodel_open": "**同じ学習パラメータ数で CVFP は競争力があるか。** 未決: {kind} 参照モデル `{arm}`（学習パラメータ {trainable}、`{ref}` は {cvfp}）対 CVFP 群、{metric}: Δ {d} [{lo}, {hi}]（{verdict}）。",  # noqa: E501
    "w_confound_hash": "交絡: `{hash}` がアーム間で異なる（{groups}）{budget}。同じデータ・評価・予算で比較されていない。",  # noqa: E501
    "w_budget": "。budget_hash は最大ステップ/エポック、バッチサイズ、評価間隔、停止規則を含む",
    "w_confound_precision": "交絡: ランごとに精度が異なる（{values}）。",
    "w_allow_confound": "交絡: allow_confound で保護キーを上書き（{keys}）。",
    "w_single_seed": "シード 1 個（{seed}）: 分散を推定できず、差をラン間のばらつきと区別できない。",
    "w_failed_seeds": "完了は {n}/{total} シードのみ（{runs}）。統計は n={n}。",
    "w_no_ci": "成功シードは n={n}: CI と対応検定なし。",
    "w_unequal_n": "アーム間で n が異なる（{counts}）。",
    "w_best_first": "最良エポック = 最初のエポック（選択ノイズまたは即時の過学習）",
    "w_best_last": "最良エポック = 最後のエポック（予算で打ち切り、さらに学習の余地あり）",
    "w_train_val_gap": "最良エポックで val loss が train loss より {gap} 大きい（train/val の乖離が大きい）",
    "w_non_finite": "非有限値（{keys}）",
    "w_skipped_steps": "非有限勾配で {count} ステップをスキップ",
    "w_frozen_changed": "不変条件違反: 凍結テンソルが変化",
    "w_dead_tensors": "更新されない学習テンソル: {names}",
    "w_remote_code": "事前学習モデル同梱の Python コードを実行した (trust_remote_code: true)",
    "w_invariant_warning": "不変条件の警告: {text}",
    "w_phase1_not_converged": "{arms} で Phase 1 が収束前に終了: {iterations} イテレーションで収束したトークンは {ratio}（しきい値 {threshold}）。文脈は固定点ではない",  # noqa: E501
    "w_unfreeze_short": "解凍後の学習は {epochs} エポック（エポック {epoch} から）。{minimum} 未満では解凍の効果を測れない",  # noqa: E501
    "w_unfreeze_low_lr": "解凍した {groups} の実効学習率は最大 {lr}（{minimum} 未満）: 事前学習テンソルはほとんど変化していない",  # noqa: E501
    "w_best_before_unfreeze": "選択されたエポック {best} は解凍（エポック {epoch}）より前: 報告した重みは解凍後に学習していない",  # noqa: E501
    "w_run_warning": "ランの警告: {text}", "w_load_warning": "データの警告: {text}",
    "w_seeds": "シード {seeds}",
    "w_seed": "シード {seeds}",
    "w_every_seed": "全シード",
    "w_every_arm": "全アーム",
    "w_except": "{which} を除く",
    "w_capacity": "学習パラメータ数が `{hi}`（{hi_n}）と `{lo}`（{lo_n}）で {ratio}× 異なる（容量の差、参考情報）。",  # noqa: E501
    "w_same_split": "{metric}: test 指標がないため、選択と報告が同じ val 分割（楽観的）。",
    "w_superseded": "ラン `{run_id}` は新しい設定で置き換えられたため除外",
    "w_problem": "{text}", "w_run_problem": "`{run_id}`: {text}",
    "missing_pairs": "。このうち {k}/{n} ランはフォルダなし",
    "rep_group": "グループ", "rep_hashes": "data / split / eval ハッシュ",
    "rep_arms_title": "**研究の全アーム**（ランフォルダ {runs} 個、{arms} アーム × {seeds} シード）: ベースからの変更、ラン、時間、データ。",  # noqa: E501
    "answer": "結果の要約:", "answer_is_ref": "（基準）",
    "answer_best": "{metric}（{dir}）の最良アームは `{best}`{ref}: {value}。次点 `{second}` との比較 {cell} [Holm] で改善。",  # noqa: E501
    "answer_tie": "{metric}（{dir}）で最良と言えるアームはない: `{best}`{ref} の平均 {value} が最良だが、次点 `{second}` と区別できない: {cell} [Holm]。",  # noqa: E501
    "answer_single": "{metric}（{dir}）の結果があるアームは `{best}`{ref} のみ: {value}。",
    "answer_no_skill_all": "{metric}（{dir}）で単純ベースライン `{b}` より良いアームはない: `{b}` は {value}、アームは {lo}–{hi}。{n} アームすべてが `{b}` より悪い（スキルなし）。",  # noqa: E501
    "answer_no_skill": "{metric}（{dir}）で単純ベースライン `{b}` より良いと示せたアームはない: `{b}` は {value}、アームは {lo}–{hi}。{n} アーム中 {k} が `{b}` より悪く（スキルなし）、残りは区別できない。",  # noqa: E501
    "answer_no_skill_none": "{metric}（{dir}）で単純ベースライン `{b}` より良いと示せたアームはない: `{b}` は {value}、アームは {lo}–{hi}。どのアームも `{b}` と区別できない。",  # noqa: E501
    "answer_vs_ref": "基準 `{ref}` に対して: {groups}。",
    "answer_vs_base": "最良の単純ベースライン `{b}`（{value}）に対して: {groups}。",
    "basis_items": "（{n} シード × テスト項目 {items} 個。シード内の項目ブートストラップと、対応差のシード間分散をアーム間でプール（自由度 {df}）。区間は {m} 個の比較で Holm 補正。）",  # noqa: E501
    "basis_blocks": "（{n} シード × テスト項目 {items} 個。シード内の項目ブロックブートストラップ（連続 {block} 項目）と、対応差のシード間分散をアーム間でプール（自由度 {df}）。区間は {m} 個の比較で Holm 補正。）",  # noqa: E501
    "basis_seeds": "（{n} シード、項目別スコアがないためシード単位の統計のみ。対応差のシード間分散をアーム間でプール（自由度 {df}）。区間は {m} 個の比較で Holm 補正。）",  # noqa: E501
    "dir_min": "低いほど良い", "dir_max": "高いほど良い",
    "dir_rel_min": "相対変化、負 = 改善", "dir_rel_max": "相対変化、正 = 改善",
    "dir_diff_min": "差、負 = 改善", "dir_diff_max": "差、正 = 改善",
    "g_better": "改善", "g_worse": "悪化", "g_inconclusive": "判定保留", "g_no_difference": "差の検出なし",
    "g_insufficient": "検定不可",
    "gb_better": "より良い", "gb_worse": "より悪い（スキルなし）", "gb_inconclusive": "判定保留",
    "gb_no_difference": "区別できない", "gb_insufficient": "検定不可",
    "v_better": "改善", "v_worse": "悪化", "v_inconclusive": "判定保留", "v_no_difference": "差の検出なし",
    "v_insufficient": "検定不可",
    "b_better": "`{b}` より良い", "b_worse": "`{b}` より悪い: スキルなし", "b_inconclusive": "`{b}` に対して判定保留",
    "b_no_difference": "`{b}` と区別できない", "b_insufficient": "検定不可",
    "why_insufficient": "n = {n}: シード間のばらつきが不明", "seed_count": "{n} シード中 {k}",
    "bs_better": "改善", "bs_worse": "悪化: スキルなし", "bs_inconclusive": "判定保留",
    "bs_no_difference": "区別できない", "bs_insufficient": "検定不可",
    "inconclusive_fact": "{word}: {fact}、ただし n = {n}", "seed_fact": "{n} シード中 {k} で{side}",
    "side_better": "改善", "side_worse": "悪化",
    "h_value": "{metric} [95 %]", "h_vs_ref": "`{ref}` との比較（{dir}）[Holm]", "h_vs_base": "`{b}` との比較 [Holm]",
    "h_time": "1 ランの時間（最小–最大）", "baseline_col": "単純ベースライン（同じテスト項目）",
    "compared_baseline": "全アームと比較",
    "cold_note": "‡ 研究の最初のラン（コールドスタート: インポート、データ読み込み、共有キャッシュ作成）を含む。",
    "profile_title": "スモークテスト: プロファイル {profiles}",
    "profile_banner": "{total} ラン中 {n} ランが研究のプロファイル {profiles}（`--profile`）で実行された。データと予算を縮小して仕組みを確かめるためのもので、以下の数値はスモークテストであり結果ではない。研究本来の設定は `--profile` なしで実行すること。",  # noqa: E501
    "plot_first": "アーム別 {metric}（判定に使う指標）: 平均と 95 % 区間（項目とシード）、点は各シード。破線: 単純ベースライン",  # noqa: E501
    "plot_overlay_title": "検証 {metric}（選択用の分割。判定は {test} を使う）",
    "headline_note": "[95 %]: 項目とシードの不確かさを含むアーム平均の区間。[Holm]: 判定の根拠となる区間（この指標の全比較で Holm 補正）。区間が 0 を含まないときだけ改善・悪化と判定する。シード数は記述的な情報。方式: docs/statistics.md。",  # noqa: E501
    "plot_overlay": "全アームの val {metric} のエポック推移（平均線、シード間 ±1 標準偏差の帯、細線は各シード）。破線: 単純ベースライン",  # noqa: E501
    "comparison_note_items": "主指標 {metric}: 各アームを `{ref}` および最良の単純ベースラインと、最良アームを次点と、同じテスト項目 {items} 個・同じシードで比較。不確かさ = シード内の項目ブートストラップ（連続 {block} 項目のブロック）+ シード間分散: 2 アームの比較ではシード別の差（同じシードのアームはデータ順序と初期化を共有）を、{arms} アームのアーム × シード残差としてプール（自由度 {df}）。ベースラインとの比較ではアーム自身のシード分散をアーム間でプール（標準偏差 {pooled}、自由度 {pooled_df}）。プールよりばらつく組やアームは自身の分散を使う。Welch–Satterthwaite 自由度の t 区間を {m} 個の比較で Holm 補正: 区間が 0 を含まないのは Holm p < 0.05 のときに限る。他の指標は記述的な 95 % 区間で判定なし。† = 一部シード未完了。",  # noqa: E501
    "comparison_note_seeds": "主指標 {metric}: 項目別スコアがないためシード単位の統計のみ: 2 アームのシード別の差を {arms} アームのアーム × シード残差としてプール（自由度 {df}）、ベースラインとの比較ではアームのシード分散をプール（標準偏差 {pooled}、自由度 {pooled_df}）、ベースラインは定数として扱う。t 区間を {m} 個の比較で Holm 補正（判定は区間から読む）。他の指標は記述的。† = 一部シード未完了。",  # noqa: E501
    "primary_mark": "主指標: 判定あり", "descriptive_mark": "記述的",
    "holm_ci": "[Holm]", "delta": "差 Δ", "delta_pct": "相対変化", "per_seed_d": "シード別",
    "plot_final": "アーム別 {metric}: 平均と 95 % 区間（項目とシード）、点は各シード。破線: 最良の単純ベースライン",
    "plot_paired": "`{ref}` との {metric} の比較: シード別の差（点）と判定の根拠の Holm 区間",
    "pl_epoch": "エポック", "pl_iteration": "Phase 1 イテレーション", "pl_baseline": "単純ベースライン",
    "pl_seed_lines": "細線: 各シード、帯: ±1 標準偏差", "pl_seed_dots": "各シード",
    "pl_interval": "95 % 区間", "pl_holm_interval": "差 [Holm 区間]",
    "pl_delta": "{metric}: {ref} との差 ({unit}、{better})",
    "pl_neg_better": "負 = 改善",
    "pl_pos_better": "正 = 改善",
    "pl_grad": "勾配ノルム（クリップ前）",
    "pl_timeframe": "時間足",
    "pl_corr": "val Pearson r（最良エポック）", "pl_trainable": "学習パラメータ数",
    "lower_better": "低いほど良い", "higher_better": "高いほど良い",
    "unit_nats": "nats / トークン", "unit_percent": "%", "unit_bpb": "bits / バイト", "unit_huber": "マスク付き Huber",
    "unit_norm2": "正規化単位²", "unit_bp2": "bp²",
    "w_seed_level": "{metric}: シード単位の統計のみ（{text}）。ベースラインは定数として扱う。",
    "w_below_baseline": "{metric} でスキルなし。区間全体が `{baseline}`（{value}）より悪い側",
    "w_not_above_baseline": "{metric} で `{baseline}`（{value}）より良いとは言えない（区間が差なしを含む）",
}

STRINGS = {"en": EN, "ja": JA}
from freezelab.report.masking import STRINGS as _MASKING  # noqa: E402  (the time-series masking section)

for _lang, _strings in _MASKING.items():
    STRINGS[_lang].update(_strings)

# Protocol §8. Numbers are written identically in both languages.
_CONTEXT = {
    "welch": ("Welch, Mihalcea & Kummerfeld 2020 (EMNLP), arXiv 2009.14109",
              ("AWD-LSTM on PTB; every combination of tying, freezing and pretrained init",
               "PTB 上の AWD-LSTM。重み共有・凍結・事前学習初期化の全組合せ"),
              ("Frozen output embeddings give very poor perplexity; frozen pretrained input embeddings are fine; best: pretrained input, untied, input frozen.",  # noqa: E501
               "出力 Embedding の凍結は PPL を大きく悪化。事前学習済み入力 Embedding の凍結は問題なし。最良は事前学習入力・非共有・入力凍結。")),  # noqa: E501
    "ulmfit": ("ULMFiT: Howard & Ruder 2018, arXiv 1801.06146",
               ("LM pretraining, discriminative LRs (÷2.6 per layer), gradual unfreezing",
                "LM 事前学習、層別学習率（1 層ごとに ÷2.6）、段階的解凍"),
               ("Error down 18–24 % on most of 6 datasets; val error with vs without pretraining: IMDb 5.00 vs 5.63, TREC-6 5.69 vs 10.67, AG 5.38 vs 5.52.",  # noqa: E501
                "6 データセットの大半で誤差 18–24 % 減。事前学習あり/なしの val 誤差: IMDb 5.00 vs 5.63、TREC-6 5.69 vs 10.67、AG 5.38 vs 5.52。")),  # noqa: E501
    "lpft": ("LP-FT: Kumar et al. 2022 (ICLR), arXiv 2202.10054",
             ("Linear probe, then full fine-tuning; 10 distribution-shift datasets",
              "線形プローブの後に全体ファインチューニング。分布シフト 10 データセット"),
             ("Fine-tuning vs linear probe: +2 % ID, −7 % OOD; LP-FT vs fine-tuning: +1 % ID, +10 % OOD.",
              "全体 FT 対 線形プローブ: ID +2 %、OOD −7 %。LP-FT 対 全体 FT: ID +1 %、OOD +10 %。")),
    "tan": ("Tan et al. 2024 (NeurIPS), arXiv 2406.16964",
            ("Ablations of LLM-based forecasters (OFA/GPT4TS, Time-LLM, CALF)",
             "LLM ベース予測器（OFA/GPT4TS、Time-LLM、CALF）のアブレーション"),
            ("Removing the LLM or replacing it by one attention layer does not hurt MSE; random-init LMs do no worse than pretrained ones.",  # noqa: E501
             "LLM の除去や 1 層 attention への置換で MSE は悪化しない。ランダム初期化 LM も事前学習済みと同等。")),
    "gpt4ts": ("GPT4TS / One Fits All: Zhou et al. 2023 (NeurIPS), arXiv 2302.11939",
               ("GPT-2 (6 blocks), attention and FFN frozen; embeddings, norms and head trained",
                "GPT-2（6 ブロック）、attention と FFN を凍結。埋め込み・正規化・出力層のみ学習"),
               ("State of the art or comparable across 7 task families; the recipe of the frozen_ln arm.",
                "7 種のタスク群で最先端または同等。frozen_ln アームのレシピ。")),
    "riachi": ("Riachi et al. 2025, arXiv 2506.21570",
               ("LM vs random initialisation for low-data univariate forecasting",
                "低データ単変量予測での LM 初期化 対 ランダム初期化"),
               ("LM initialisation wins and the gap does not close with more training: the evidence is contested.",
                "LM 初期化が優位で、学習を続けても差は縮まらない。証拠は割れている。")),
}
CONTEXT_BY_TASK = {"lm": ("welch", "ulmfit", "lpft"), "timeseries": ("tan", "gpt4ts", "riachi"),
                   "classify": ("ulmfit", "lpft")}
TRANSFER_CONTEXT = ("ulmfit", "lpft")  # your own task: the general transfer-learning results


def check_lang(lang: str) -> str:
    """Validate a report language.

    Raises:
        ConfigError: for a language other than ``en`` or ``ja``.
    """
    if lang not in LANGS:
        raise ConfigError(f"Unknown report language {lang!r}; use --lang en or --lang ja.")
    return lang


def lookup(table: dict[str, dict[str, str]], lang: str, key: str, **params: object) -> str:
    """The string ``key`` of a ``{lang: {key: text}}`` table in ``lang``, formatted with ``params`` (falls back
    to English); the report's own strings (``t``) and a section's own table (e.g. report/replication.py)."""
    text = table[lang].get(key) or table["en"][key]
    return text.format(**params) if params else text


def t(lang: str, key: str, **params: object) -> str:
    """The string ``key`` in ``lang``, formatted with ``params`` (falls back to English)."""
    return lookup(STRINGS, lang, key, **params)


def context_rows(task: str, lang: str) -> list[tuple[str, str, str]]:
    """(work, setting, result) rows of the §8 context box for a task; the general transfer results (ULMFiT,
    LP-FT) for a task of your own; both studies' rows when the task is unknown."""
    keys = CONTEXT_BY_TASK.get(task) or (TRANSFER_CONTEXT if ":" in task else tuple(_CONTEXT))
    i = LANGS.index(lang)
    return [(_CONTEXT[k][0], _CONTEXT[k][1][i], _CONTEXT[k][2][i]) for k in keys]
