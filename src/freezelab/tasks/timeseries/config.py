"""Resolved configuration of one run of the pretrained-encoder transfer study (timeseries-transfer.md).

Sections: data → windows → masking → model → backbone → optim → loss → train → runtime. The defaults
are the offline default: real EUR/USD hourly bars shipped in `backtesting`'s wheel, timeframes
h1/h4/d, short windows that fit that file, and the bundled all-MiniLM-L6-v2 encoder as backbone.
Arms (spec §5) differ in `backbone.kind` and `backbone.train`; everything in `PROTECTED_KEYS` must be
identical across arms (protocol §2).
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from freezelab.config.fields import HASH_NEUTRAL, Strict, checkpoint_minutes_field, trust_remote_code_field
from freezelab.tasks.timeseries.sessions import timezone_problem

TF = Literal["m1", "m5", "m15", "m30", "h1", "h4", "d"]


class TSDataConfig(Strict):
    source: Literal["fx_default", "file", "synthetic", "sp500", "nasdaq"] = Field(
        "fx_default", description="fx_default: EUR/USD hourly bars shipped in backtesting's wheel (offline, "
        "base_tf h1); file: your own CSV/Parquet at `path`; synthetic: a seeded random walk (tests, smoke); "
        "sp500 / nasdaq: S&P 500 / NASDAQ Composite daily bars 1999-2018 shipped in arch's wheel (permissive "
        "licence; base_tf d, timeframes [d]).")
    path: Optional[str] = Field(None, description="OHLC file (source: file), e.g. usdjpy_m1.parquet; relative "
                                "paths are resolved from the working directory.")
    base_tf: TF = Field("h1", description="Timeframe of the file's bars; the anchors are its close times.")
    timeframes: list[TF] = Field(["h1", "h4", "d"], min_length=1,
                                 description="Timeframes in model order, finest first; built by resampling.")
    on_invalid: Literal["reject", "drop"] = Field(
        "reject", description="Inconsistent bars: reject (error naming the rows) or drop (warning naming them).")
    time_column: Optional[str] = Field(None, description="Timestamp column; default time/timestamp/date/first.")
    timezone: Optional[str] = Field(None, description="IANA time zone of naive timestamps in the file (UTC, "
                                    "Asia/Tokyo, ...); required when they have no offset, except date-only daily "
                                    "stamps (UTC days). Aware and epoch timestamps ignore it.")
    session_timezone: str = Field("UTC", description="Time zone whose wall clock places daily and 4-hour bar "
                                  "boundaries; FX: America/New_York.")
    session_close: str = Field("00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM at which a "
                               "daily bar closes (and 4-hour bars start) in session_timezone; FX: '17:00', so days "
                               "open at 21:00 UTC in summer, 22:00 in winter.")
    synthetic_bars: int = Field(20_000, ge=100, description="source: synthetic: number of base bars.")
    synthetic_seed: int = Field(0, description="source: synthetic: random-walk seed.")
    split: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="Train/val/test shares of anchors, "
                                              "chronological, with an embargo between periods.")
    data_seed: int = Field(0, description="Seed of the fixed val/test window subsets; same for every run.")
    normalisation: Literal["train_only", "whole_period", "none"] = Field(
        "train_only", description="train_only: per-window level removal (bp from the last visible base close), "
        "scaled by the std over train windows only (spec §3). whole_period: the original's intent, raw prices "
        "z-scored per timeframe with mean/std over every bar of the file, val and test included (LEAKS their "
        "level and scale). none: raw prices, what the seed run trained on (its stats were never loaded).")

    @model_validator(mode="after")
    def _consistent(self) -> TSDataConfig:
        if self.source == "file" and not self.path:
            raise ValueError("data.source=file needs data.path")
        if self.source != "file" and self.path:
            raise ValueError("data.path is only read with data.source=file")
        if self.source in ("sp500", "nasdaq") and (self.base_tf != "d" or self.timeframes != ["d"]):
            raise ValueError(f"data.source={self.source} holds daily bars: set data.base_tf: d and data.timeframes: "
                             f"[d] (got base_tf {self.base_tf}, timeframes {self.timeframes})")
        for key, name in (("data.timezone", self.timezone), ("data.session_timezone", self.session_timezone)):
            problem = timezone_problem(name, key) if name is not None else None
            if problem:
                raise ValueError(problem)
        if self.base_tf not in self.timeframes:
            raise ValueError(f"data.base_tf={self.base_tf} must be one of data.timeframes={self.timeframes}")
        if len(set(self.timeframes)) != len(self.timeframes):
            raise ValueError(f"data.timeframes has duplicates: {self.timeframes}")
        return self


class WindowsConfig(Strict):
    layout: Literal["anchored", "legacy"] = Field(
        "anchored", description="anchored: every timeframe's K_f most recent bars closed by the anchor t (spec "
        "§3). legacy: the original's window (spec §2): K consecutive base bars, each coarser timeframe the bars "
        "whose OPEN time lies within them (the last one aggregates bars after the window: look-ahead), "
        "right-aligned in K_f slots and zero-padded on the left; no gap rule; padding is never masked or scored.")
    context: dict[str, int] = Field(
        {"h1": 64, "h4": 32, "d": 16},
        description="K_f: bars per window for each timeframe, all ending at the anchor t (only bars closed by "
        "t). Each must be a multiple of that timeframe's model.patch_len.")
    max_gap_minutes: dict[str, Optional[float]] = Field(
        default_factory=dict, description="Per-TF limit on gaps inside a window (None = no limit); unlisted TFs "
        "use the spec defaults (m1–m30 reject weekends, h1/h4/d allow gaps).")
    train_stride_minutes: Optional[int] = Field(None, ge=1, description="Train anchors every this many minutes "
                                                "(None: every base bar; spec: 15).")
    eval_stride_minutes: Optional[int] = Field(None, ge=1, description="Val/test anchor stride (spec: 60).")
    max_eval_windows: Optional[int] = Field(20_000, ge=1, description="Fixed seeded subset of val and test "
                                            "windows each, spread over the whole period.")


class MaskingConfig(Strict):
    ratio: Union[float, dict[str, float]] = Field(0.15, description="ρ_f: share of each TF's bars that are "
                                                  "targets (scored); the run records the measured share.")
    span_min: Optional[dict[str, int]] = Field(None, description="Shortest seed span per TF (default: 3 for "
                                               "m1–m15, 1 for m30 and coarser).")
    span_max: Optional[dict[str, int]] = Field(None, description="Longest seed span per TF (default: 10 for "
                                               "m1–m15, 4 for m30 and coarser).")
    scheme: Literal["disjoint", "seed_closure", "full_closure", "legacy_index_sync"] = Field(
        "disjoint", description="disjoint: leak-free at the declared ratio; coarse-TF targets only before every "
        "finer window, bars sharing time with a target hidden (docs/timeseries-masking.md). seed_closure: one "
        "closure step from seed spans (earlier runs; LEAKS, the report warns). full_closure: closure to the "
        "fixed point (earlier runs; leak-free but masks most fine bars). legacy_index_sync: the original's masks "
        "(spec §2): spans drawn once over max K_f slot positions with the finest timeframe's ratio and spans, the "
        "same SLOTS copied to every timeframe (right-aligned, padding never masked), one fixed mask per window "
        "for every epoch and seed (LEAKS: slots are not times; the report warns).")
    mask_seed: int = Field(0, description="Seed of the fixed val/test masks (identical for every arm and seed).")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "closure" in data:
            old = data["closure"]
            raise ValueError(f"masking.closure was replaced by masking.scheme: use scheme: {old}_closure to "
                             f"reproduce closure: {old} (it leaks or over-masks, see docs/timeseries-masking.md), or "
                             "drop the key for the leak-free default scheme: disjoint")
        return data
    mask_inputs: bool = Field(True, description="false reproduces the original's leak: masked bars enter the "
                              "model with their true values and no mask flag (the input is the unmasked window) "
                              "while still being the scored targets; the report flags it. Never use it for results.")


class ModelConfig(Strict):
    patch_len: Union[int, dict[str, int]] = Field(
        {"h1": 8, "h4": 8, "d": 4}, description="P: bars per token, one value or per TF.")
    position: Literal["tau", "patch_index"] = Field(
        "tau", description="tau: sinusoidal encoding of log(1 + minutes from patch close to t) through a Linear; "
        "patch_index: a learned embedding per TF and patch index.")
    time_frequencies: int = Field(16, ge=1, description="Sinusoid frequencies of τ.")
    embed_norm: bool = Field(True, description="LayerNorm on the summed token embedding before the backbone.")
    embed_scale: float = Field(1.0, gt=0, description="Multiplier on the token embedding (the original: 1/√d).")
    mask_init_std: float = Field(0.02, ge=0, description="Init std of the learned mask vectors μ_f.")
    channels: list[Literal["log_range", "log_return"]] = Field(
        default_factory=list, description="Extra input channels per bar (spec §3), in per cent: log_range = "
        "100·ln(high/low), log_return = 100·ln(close/previous close), 0 for a window's first bar. Blanked bars "
        "get 0, and so does the return of a bar whose previous bar is blanked (it would reveal that close).")


class BackboneConfig(Strict):
    kind: Literal["pretrained", "random_init", "none", "one_attn"] = Field(
        "pretrained", description="pretrained: load `source`; random_init: same config, re-initialised by the "
        "backbone's own initialiser (seeded); none: identity (no_backbone); one_attn: one random-init "
        "self-attention layer + residual + LayerNorm.")
    source: str = Field("minilm", description="'minilm' (bundled offline), a hub id (t5-small, t5-base, gpt2) or a "
                        "local model directory. Also gives the width d for kind none/one_attn.")
    revision: Optional[str] = Field(None, description="Hub revision of a hub id.")
    trust_remote_code: bool = trust_remote_code_field()
    num_layers: Optional[int] = Field(None, ge=1, description="Keep only the first k blocks (None: all).")
    keep_positions: bool = Field(False, description="BERT/GPT-2: keep the LM's absolute position embeddings "
                                 "(added to τ); default: removed, τ replaces them.")
    one_attn_heads: int = Field(8, ge=1, description="Heads of the one_attn layer (must divide d).")
    train: Literal["frozen", "frozen_then_unfrozen", "finetune", "discriminative"] = Field(
        "frozen", description="frozen: never trained; frozen_then_unfrozen: trainable from epoch "
        "unfreeze_epoch+1; finetune: from step 0 at lr_scale; discriminative: block i at "
        "lr_scale·ξ^(L−1−i).")
    lr_scale: float = Field(0.1, gt=0, description="s_bb: LR scale of the trainable backbone groups.")
    unfreeze_epoch: int = Field(2, ge=1, description="frozen_then_unfrozen: epochs trained frozen (N).")
    unfreeze_warmup_steps: int = Field(20, ge=0, description="Linear LR warm-up of the unfrozen groups (W).")
    reset_state: bool = Field(True, description="Unfreezing starts the backbone groups' Adam state empty.")
    reset_patience: bool = Field(True, description="Early-stopping patience restarts at the unfreeze boundary.")
    discriminative_factor: float = Field(1 / 2.6, gt=0, le=1, description="ξ (ULMFiT 1/2.6; 0.75, 0.9).")
    train_norms: bool = Field(False, description="frozen_ln variant: the backbone's norms (all LayerNorms, "
                              "group encoder.norm) train while the rest stays frozen (GPT4TS).")


class OptimConfig(Strict):
    lr: float = Field(1e-3, gt=0, description="Base LR; each group gets base · scale_g · f(s) · active_g(s).")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas (no momentum cycling).")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled decay on matrices only; none on norms, biases "
                                "and mask vectors; 0 for frozen groups (lr 0).")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up of f(s), then cosine to min_lr_ratio.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="f at the last step.")
    grad_clip: float = Field(1.0, gt=0, description="Max total norm, after unscaling, over optimizer params.")


class LossConfig(Strict):
    huber_delta: float = Field(1.0, gt=0, description="δ of the masked Huber loss (normalised units).")
    tf_weights: Optional[dict[str, float]] = Field(None, description="w_f across TFs (None: equal).")
    consistency_weight: float = Field(0.0, ge=0, description="λ_c of the cross-TF consistency term (0: off).")


class TrainConfig(Strict):
    max_epochs: int = Field(10, ge=1, description="Epoch budget (every arm the same).")
    batch_size: int = Field(64, ge=1, description="Windows per step (drop_last).")
    steps_per_epoch: Optional[int] = Field(None, ge=1, description="Cap on steps per epoch (None: one pass).")
    eval_batch_size: int = Field(256, ge=1, description="Windows per evaluation batch.")
    patience: int = Field(3, ge=1, description="Epochs without improvement of the selection metric before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    selection_metric: str = Field("val/mse", pattern=r"^val/", description="Val metric for early stopping and "
                                  "checkpoint choice (TF-mean masked normalised MSE by default).")
    selection_mode: Literal["auto", "min", "max"] = Field("auto", description="auto: max for corr/r2/skill, "
                                                          "else min.")
    leak_check_batches: int = Field(2, ge=1, description="Batches per epoch checked for masked-input leaks.")


class TSRuntimeConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU; "
                                                   "cuda: CUDA, or an error where it is not available.")
    precision: Literal["bf16", "fp32", "fp16"] = Field(
        "bf16", description="bf16 autocast (default), fp32, or fp16 autocast with a GradScaler whose collapse "
        "fails the run.")
    threads: Optional[int] = Field(None, ge=1, description="torch intra-op threads (None: default).")
    compile: bool = Field(False, json_schema_extra=HASH_NEUTRAL, description=(
        "torch.compile the model (training and evaluation; the same losses within float rounding, tested on CPU). "
        "For GPUs; on a CPU it needs a C++ compiler and rarely pays."))
    devices: int = Field(1, ge=1, json_schema_extra=HASH_NEUTRAL, description=(
        "Data-parallel training in N processes, each step's windows split between them (docs/scale.md): the "
        "same losses as one process within float rounding where the backbone has no dropout; with dropout each "
        "process draws its own masks. Not with runtime.precision: fp16."))
    fp16_init_scale: float = Field(2.0**16, gt=0, description="Initial GradScaler scale (fp16).")
    fp16_max_skip_fraction: float = Field(0.05, ge=0, le=1, description="FAILED(fp16_scale_collapse) above this "
                                          "share of overflow-skipped steps in an epoch.")
    max_nonfinite_steps: int = Field(3, ge=1, description="Consecutive non-finite losses/norms before FAILED.")
    checkpoint_minutes: Optional[float] = checkpoint_minutes_field()
    log_every_steps: int = Field(10, ge=0, description="Per-step scalars (train/step_loss, lr/<group>, "
                                 "grad_norm/<group>) to metrics.jsonl, TensorBoard and MLflow every this many "
                                 "optimizer steps; 0: epoch records only.")


class TSConfig(Strict):
    """The resolved configuration of one run of the time-series transfer study."""

    data: TSDataConfig = Field(default_factory=TSDataConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    runtime: TSRuntimeConfig = Field(default_factory=TSRuntimeConfig)

    def patch_len(self, tf: str) -> int:
        """P_f of one timeframe."""
        p = self.model.patch_len
        return p if isinstance(p, int) else p[tf]

    @model_validator(mode="after")
    def _consistent(self) -> TSConfig:
        tfs = self.data.timeframes
        problems = []
        if set(self.windows.context) != set(tfs):
            problems.append(f"windows.context has {sorted(self.windows.context)} but data.timeframes is {tfs}")
        if isinstance(self.model.patch_len, dict) and not set(tfs) <= set(self.model.patch_len):
            problems.append(f"model.patch_len lacks {sorted(set(tfs) - set(self.model.patch_len))}")
        if not problems:
            for f in tfs:
                k, p = self.windows.context[f], self.patch_len(f)
                if p < 1 or k % p:
                    problems.append(f"windows.context.{f}={k} is not a multiple of model.patch_len for {f} ({p})")
        for name, per_tf in (("masking.ratio", self.masking.ratio), ("masking.span_min", self.masking.span_min),
                             ("masking.span_max", self.masking.span_max), ("loss.tf_weights", self.loss.tf_weights)):
            if isinstance(per_tf, dict) and set(per_tf) != set(tfs):
                problems.append(f"{name} must list exactly the timeframes {tfs}, got {sorted(per_tf)}")
        if self.backbone.train == "frozen_then_unfrozen" and self.backbone.unfreeze_epoch >= self.train.max_epochs:
            problems.append(f"backbone.unfreeze_epoch={self.backbone.unfreeze_epoch} must be below "
                            f"train.max_epochs={self.train.max_epochs}")
        if self.backbone.train_norms and self.backbone.train != "frozen":
            problems.append("backbone.train_norms (frozen_ln) applies to backbone.train=frozen only")
        if self.loss.consistency_weight > 0 and self.data.normalisation != "train_only":
            problems.append("loss.consistency_weight needs data.normalisation: train_only (the term aggregates "
                            "across timeframes in level-free bp)")
        if self.windows.layout == "legacy" and self.windows.max_gap_minutes:
            problems.append("windows.max_gap_minutes has no effect with windows.layout: legacy (the original kept "
                            "every window); remove it")
        if len(set(self.model.channels)) != len(self.model.channels):
            problems.append(f"model.channels has duplicates: {self.model.channels}")
        if self.runtime.precision == "fp16" and self.runtime.fp16_init_scale < 1:
            problems.append("runtime.fp16_init_scale must be >= 1")
        if self.runtime.devices > 1 and self.runtime.precision == "fp16":
            problems.append(f"runtime.devices={self.runtime.devices} is not available with runtime.precision: fp16 "
                            "(fp16 loss scaling is not supported across processes); use runtime.precision: bf16 or "
                            "fp32, or runtime.devices: 1")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Keys that define comparability (protocol §2): data, windows, masks, the evaluation and the budget
# (epochs, steps, batch size, eval cadence, early stopping), precision and loader/thread settings.
PROTECTED_KEYS: tuple[str, ...] = ("data", "windows", "masking", "train", "runtime.precision", "runtime.compile",
                                   "runtime.threads", "runtime.devices",
                                   "runtime.fp16_init_scale", "runtime.fp16_max_skip_fraction")
