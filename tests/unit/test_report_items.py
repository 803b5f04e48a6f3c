"""Per-item score files (tracking/items.py): written by the tasks, validated as untrusted input, and the
report's fallback to seed-level statistics when they are missing or broken."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import make_demo_study  # noqa: E402

from freezelab.errors import DataError  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.warnings import full_analysis  # noqa: E402
from freezelab.tracking.items import MODEL, metric, read_items, read_run_items, write_items  # noqa: E402


def _write(tmp_path: Path, **cols) -> Path:
    base = {"id": np.arange(4), "num": np.array([1.0, 2.0, 3.0, 4.0]), "den": np.array([1.0, 1.0, 2.0, 2.0])}
    return write_items(tmp_path, MODEL, {"test": {**base, **cols}}, task="lm", metrics={"m": metric("num", "den")})


def test_round_trip_and_metric_value(tmp_path):
    items = read_items(_write(tmp_path))
    split = items.splits["test"]
    assert items.source == MODEL and split.n == 4 and split.block == 1
    assert items.metrics["m"].value(split.columns) == pytest.approx(10 / 6)
    weights = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 2.0]])
    assert items.metrics["m"].value(split.columns, weights) == pytest.approx([10 / 6, 10 / 6])


@pytest.mark.parametrize("corrupt, match", [
    (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz"),
    (lambda p: np.savez(p.open("wb"), meta=np.array([{"a": 1}], dtype=object)), "not a readable .npz"),
    (lambda p: _rewrite(p, {"test/num": np.array([1.0, np.nan, 3.0, 4.0])}), "non-finite values at items \\[1\\]"),
    (lambda p: _rewrite(p, {"test/num": np.ones(3)}), "must be float with shape"),
    (lambda p: _rewrite(p, {"test/den": -np.ones(4)}), "denominator test/den must be >= 0"),
    (lambda p: _rewrite(p, {"test/id": np.zeros(4, dtype=np.int64)}), "duplicate item identities"),
    (lambda p: _rewrite(p, {"meta": np.array("{")}), "'meta' is not valid JSON"),
    (lambda p: _rewrite(p, {"meta": np.array(json.dumps({"format": "x"}))}), "format='freezelab-items'"),
])
def test_untrusted_file_is_rejected_with_file_key_and_fix(tmp_path, corrupt, match):
    path = _write(tmp_path)
    corrupt(path)
    with pytest.raises(DataError, match=match) as err:
        read_items(path)
    assert str(path) in str(err.value) and "rerun the run" in str(err.value)
    found, problems = read_run_items(tmp_path)  # the run folder reader turns it into a problem
    assert not found and len(problems) == 1


def _rewrite(path: Path, replace: dict) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(replace)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def test_report_uses_items_and_falls_back_with_a_warning(tmp_path):
    out = make_demo_study(tmp_path / "items")
    a = full_analysis(load_study(out))
    assert a.sources[a.primary.key].method == "items+seeds" and a.sources[a.primary.key].n_items == 10
    assert "seed_level" not in {f.code for f in a.warnings}
    # a corrupted file in one run: the whole metric falls back to seed-level statistics, with the reason
    path = next((out / "runs").glob("random_tied__s1__*")) / "items" / "model.npz"
    path.write_bytes(b"garbage")
    a = full_analysis(load_study(out))
    assert a.sources[a.primary.key].method == "seeds only"
    found = [f for f in a.warnings if f.code == "seed_level"]
    assert found and "random_tied seed 1" in found[0].params["text"]
    assert any("not a readable .npz" in f.params.get("text", "") for f in a.warnings if f.code == "run_problem")
    # items that do not reproduce summary.json are not trusted either
    out2 = make_demo_study(tmp_path / "tampered")
    run = next((out2 / "runs").glob("tied_frozen__s0__*"))
    summary = json.loads((run / "summary.json").read_text())
    summary["test"]["test/ppl"] *= 0.5
    (run / "summary.json").write_text(json.dumps(summary))
    a = full_analysis(load_study(out2))
    assert a.sources[a.primary.key].method == "seeds only"
    assert "do not reproduce summary.json" in next(f for f in a.warnings if f.code == "seed_level").params["text"]


def test_lm_evaluate_per_document_sums_reproduce_the_split_metrics():
    from freezelab.tasks.lm.model import CVFPModel
    from freezelab.tasks.lm.phases import evaluate

    torch.manual_seed(0)
    model = CVFPModel(vocab_size=50, embed_dim=8, context_dim=8, num_layers=1, num_input_tokens=1,
                      tie_head=True, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([0, 7, 8, 20, 31])  # document 1 has a single token: no target
    ids = torch.randint(0, 50, (31,))
    contexts = torch.randn(31, 1, 8)
    items: dict = {}
    out = evaluate(model, ids, offsets, contexts, batch_size=5, autocast=contextlib.nullcontext,
                   token_bytes=torch.full((50,), 3), items=items)
    assert items["tokens"].tolist() == [6, 0, 11, 10]
    assert items["loss_sum"].sum() / items["tokens"].sum() == pytest.approx(out["loss"], rel=1e-6)
    assert items["correct"].sum() / items["tokens"].sum() == pytest.approx(out["acc"])
    assert items["loss_sum"].sum() / (math.log(2) * items["bytes"].sum()) == pytest.approx(out["bpb"], rel=1e-6)


def test_lm_baseline_document_scores_match_the_split_scores():
    from freezelab.tasks.lm.baselines import document_scores, fit_kn_bigram, fit_unigram
    from freezelab.tasks.lm.data import TokenDocs

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, 200)
    docs = TokenDocs(ids, np.array([0, 60, 61, 130, 200]), ("a", "b", "c", "d"))
    for model in (fit_unigram(docs, 30), fit_kn_bigram(docs, 30)):
        cols = document_scores(model, docs)
        score = model.score(docs)
        assert cols["id"].tolist() == [0, 2, 3]  # the one-token document has no target
        assert cols["loss_sum"].sum() / cols["tokens"].sum() == pytest.approx(score.loss)
        assert cols["correct"].sum() / cols["tokens"].sum() == pytest.approx(score.acc)


def test_time_series_scorer_items_reproduce_its_result():
    from freezelab.tasks.timeseries.scoring import Scorer

    rng = np.random.default_rng(1)
    scorer = Scorer(["h1", "h4"], {"h1": 10.0, "h4": 20.0})
    for _ in range(3):
        pred = {f: rng.normal(size=(5, 6, 4)) for f in ("h1", "h4")}
        target = {f: rng.normal(size=(5, 6, 4)) for f in ("h1", "h4")}
        masks = {f: rng.random((5, 6)) < 0.4 for f in ("h1", "h4")}
        scorer.add(pred, target, masks)
    cols, metrics = scorer.items()
    result = scorer.result("test")
    from freezelab.tracking.items import MetricDef

    for name in ("mse", "mse_bp", "r2", "corr", "mse/h4", "corr/h1"):
        spec = metrics[name]
        value = MetricDef(tuple(spec["num"]), tuple(spec["den"]), tuple(spec["scale"])).value(cols)
        assert value == pytest.approx(result[f"test/{name}"]), name
