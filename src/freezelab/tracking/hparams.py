"""TensorBoard's HParams view of a study: every run a session grouped by its arm.

Each finished run gets a session in its own ``tb/`` folder: hparams (arm, seed, reference and every
key any arm of the study overrides, so all runs fill the same columns), its best-epoch and test
metrics and the naive baselines as scalars, and its status. ``OUT/runs`` gets the study's experiment
(the columns: hparams with their values, the metrics). Written from the run folder's files, so a run
killed before it could write anything still appears, as failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from freezelab.tracking import files

SESSION_SUFFIX = ".hparams"
STUDY_SUFFIX = ".study"


def varied_keys(study_record: dict[str, Any]) -> list[str]:
    """Dotted keys that some arm of the study overrides (its diff from the base), sorted."""
    return sorted({k for arm in (study_record.get("arms") or {}).values() for k in arm.get("diff_from_base") or {}})


def columns(study_record: dict[str, Any]) -> dict[str, str]:
    """Each varied key's column type over the study's arms: ``bool``, ``number`` or ``string`` (mixed, None)."""
    out = {}
    for key in varied_keys(study_record):
        values = [pair[i] for a in study_record["arms"].values() if (pair := a["diff_from_base"].get(key))
                  for i in (0, 1)]
        if all(isinstance(v, bool) for v in values):
            out[key] = "bool"
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = "number"
        else:
            out[key] = "string"
    return out


def as_column(value: Any, kind: str) -> str | float | bool:
    """A config value in its column's type (TensorBoard shows bool, number and string columns)."""
    if kind == "bool":
        return bool(value)
    if kind == "number":
        return float(value)
    return "none" if value is None else str(value)


def run_hparams(meta: dict[str, Any], config: dict[str, Any], study_record: dict[str, Any]) -> dict[str, Any]:
    """The session's hparams: arm, seed, reference and this run's value of every varied key."""
    from freezelab.config.load import flatten

    flat = flatten(config)
    out: dict[str, Any] = {"arm": meta["arm"], "seed": float(meta["seed"]), "reference": bool(meta.get("reference"))}
    out.update({k: as_column(flat.get(k), kind) for k, kind in columns(study_record).items()})
    return out


def run_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Scalars for the HParams table: ``best/epoch``, ``best/<metric>``, ``test/*``, ``baseline/<name>/<metric>``."""
    out: dict[str, Any] = {}
    best = summary.get("best") or {}
    if best.get("epoch") is not None:
        out["best/epoch"] = best["epoch"]
    out.update({f"best/{k}": v for k, v in (best.get("metrics") or {}).items()})
    out.update(summary.get("test") or {})
    for name, values in (summary.get("baselines") or {}).items():
        out.update({f"baseline/{name}/{k}": v for k, v in (values or {}).items()})
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _plugin_event(tag: str, step: int = 0, **data: Any) -> Any:
    """An event holding HParams plugin data (experiment, session start or session end)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
    value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content))
    return Event(wall_time=time.time(), step=step, summary=Summary(value=[value]))


def _scalar_event(tag: str, value: float, step: int) -> Any:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Event(wall_time=time.time(), step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)]))


def write_session(run_dir: Path, study_record: dict[str, Any]) -> bool:
    """Write the run's HParams session into ``run_dir/tb`` once it has finished; True when written now."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    status = files.read_status(run_dir) or {}
    tb = Path(run_dir) / "tb"
    if status.get("status") not in ("succeeded", "failed") or list(tb.glob(f"*{SESSION_SUFFIX}")):
        return False
    meta = files.read_json(Path(run_dir) / files.RUN_FILE)
    config = yaml.safe_load((Path(run_dir) / files.CONFIG_FILE).read_text(encoding="utf-8")) or {}
    summary_path = Path(run_dir) / files.SUMMARY_FILE
    summary = files.read_json(summary_path) if summary_path.exists() else {}
    start = plugin_data_pb2.SessionStartInfo(group_name=meta["arm"], start_time_secs=time.time())
    for k, v in run_hparams(meta, config, study_record).items():
        value = start.hparams[k]
        if isinstance(v, bool):
            value.bool_value = v
        elif isinstance(v, float):
            value.number_value = v
        else:
            value.string_value = v
    ok = status["status"] == "succeeded"
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE,
                                         end_time_secs=time.time())
    step = int(summary.get("steps") or 0)
    writer = EventFileWriter(str(tb), filename_suffix=SESSION_SUFFIX)
    writer.add_event(_plugin_event(metadata.SESSION_START_INFO_TAG, step, session_start_info=start))
    for tag, value in run_metrics(summary).items():
        writer.add_event(_scalar_event(tag, value, step))
    writer.add_event(_plugin_event(metadata.SESSION_END_INFO_TAG, step, session_end_info=end))
    writer.close()
    return True


def write_experiment(out_dir: Path, study_record: dict[str, Any]) -> None:
    """(Re)write the study's HParams experiment in ``OUT/runs``: its hparam columns and metrics."""
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    runs = Path(out_dir) / "runs"
    arms = list(study_record.get("arms") or {})
    arm_info = api_pb2.HParamInfo(name="arm", type=api_pb2.DATA_TYPE_STRING, differs=len(arms) > 1)
    arm_info.domain_discrete.extend(arms)
    infos = [arm_info, api_pb2.HParamInfo(name="seed", type=api_pb2.DATA_TYPE_FLOAT64,
                                          differs=len(study_record.get("seeds") or []) > 1),
             api_pb2.HParamInfo(name="reference", type=api_pb2.DATA_TYPE_BOOL, differs=len(arms) > 1)]
    types = {"bool": api_pb2.DATA_TYPE_BOOL, "number": api_pb2.DATA_TYPE_FLOAT64, "string": api_pb2.DATA_TYPE_STRING}
    infos += [api_pb2.HParamInfo(name=k, type=types[kind], differs=True) for k, kind in columns(study_record).items()]
    metrics: set[str] = set()
    for summary_path in runs.glob(f"*/{files.SUMMARY_FILE}"):
        metrics.update(run_metrics(files.read_json(summary_path)))
    order = {"best": 0, "test": 1}  # the run's own numbers first, the baselines after
    experiment = api_pb2.Experiment(
        description=study_record.get("description") or "", time_created_secs=time.time(), hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m))
                      for m in sorted(metrics, key=lambda m: (order.get(m.split("/")[0], 2), m))])
    for old in runs.glob(f"events.out.tfevents.*{STUDY_SUFFIX}"):
        old.unlink()
    writer = EventFileWriter(str(runs), filename_suffix=STUDY_SUFFIX)
    writer.add_event(_plugin_event(metadata.EXPERIMENT_TAG, experiment=experiment))
    writer.close()
