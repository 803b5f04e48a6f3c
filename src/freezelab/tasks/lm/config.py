"""The resolved configuration of one run of the CVFP embedding-freeze study (spec cvfp-lm.md), and the keys
that define comparability between its arms."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from freezelab.config.fields import HASH_NEUTRAL, Strict, checkpoint_minutes_field, trust_remote_code_field


class LMDataConfig(Strict):
    source: Literal["wiki_excerpt", "text_files", "hf_dataset"] = Field(
        "wiki_excerpt", description="wiki_excerpt: the English Wikipedia excerpt shipped in gensim's wheel "
        "(offline); text_files: local files matched by `path`; hf_dataset: a Hugging Face dataset, streamed.")
    path: Optional[str] = Field(None, description="Glob or directory of text files (source: text_files).")
    doc_mode: Literal["file", "blank_line"] = Field(
        "file", description="text_files: one document per file, or per blank-line-separated block.")
    hf_name: Optional[str] = Field(None, description="Dataset id, e.g. HuggingFaceH4/ultrachat_200k.")
    hf_config: Optional[str] = Field(None, description="Dataset configuration name, if any.")
    hf_split: str = Field("train", description="Dataset split to stream, e.g. train_sft.")
    hf_row_offset: int = Field(
        0, ge=0, json_schema_extra=HASH_NEUTRAL, description="hf_dataset: skip this many rows of the split first; "
        "the documents are then rows offset, offset+1, ... in dataset order, each named by its row index (so a "
        "document split is reproducible while the dataset's row order is: pin hf_revision).")
    hf_revision: Optional[str] = Field(
        None, json_schema_extra=HASH_NEUTRAL, description="hf_dataset: the dataset revision (a commit sha, tag or "
        "branch) to read, so its rows and their order stay fixed.")
    hf_data_files: Optional[Union[str, list[str]]] = Field(
        None, json_schema_extra=HASH_NEUTRAL, description="hf_dataset with a local builder as hf_name (json, csv, "
        "parquet, text): the files to read, e.g. data/chat.jsonl (offline).")
    max_train_docs: Optional[int] = Field(None, ge=1, description="Training documents (N); None = all.")
    n_val_docs: int = Field(50, ge=1, description="Validation documents (selection).")
    n_test_docs: int = Field(50, ge=1, description="Test documents (scored once at the best epoch).")
    max_tokens_per_doc: Optional[int] = Field(512, ge=2, description="Cap per document (seed: 512).")
    overflow: Literal["truncate", "chunk"] = Field(
        "truncate", description="truncate: keep the first max_tokens_per_doc tokens; chunk: split a long "
        "document into pieces that stay in its split.")
    text: Literal["full", "first_turn"] = Field(
        "full", json_schema_extra={"hash_neutral": True}, description="What of each document is kept. full: "
        "everything (chat rows: every message's "
        "content joined with one space). first_turn: chat rows (hf_dataset with `messages`, e.g. UltraChat) keep "
        "only the first user message, as the seed's untied 'embedding trained' arm did (cvfp-lm.md §9 row 1); "
        "every other document keeps its first paragraph, the first blank-line-separated block of at least 20 "
        "words (wiki_excerpt: the article's lead; text_files with doc_mode=file: the file's first paragraph, with "
        "doc_mode=blank_line every document is one block already; hf rows with `text`: its first paragraph).")
    add_eos: bool = Field(False, description="Append the tokenizer's EOS/SEP token to every document.")
    data_seed: int = Field(0, description="Fixes the document split; identical for every run of a study.")
    split: Literal["document", "token_fraction"] = Field(
        "document", json_schema_extra=HASH_NEUTRAL, description="document (freezelab): whole documents go to "
        "train, val or test. token_fraction (faithful, cvfp-lm.md §6, §9 flaw 4): the train and val documents are "
        "concatenated in order and cut at token ⌊T·train_tokens/(train+val tokens)⌋, so one document is split "
        "across train and val, as the original did; test stays document-level. The split_hash records it.")

    @model_validator(mode="after")
    def _hf_keys_need_hf(self) -> LMDataConfig:
        used = [k for k, v in (("hf_row_offset", self.hf_row_offset != 0), ("hf_revision", self.hf_revision),
                               ("hf_data_files", self.hf_data_files)) if v]
        if used and self.source != "hf_dataset":
            raise ValueError(f"data.{', data.'.join(used)} only apply to data.source=hf_dataset (now "
                             f"{self.source}); drop them or set data.source: hf_dataset")
        return self


class EmbeddingConfig(Strict):
    source: str = Field(
        "minilm", description="'minilm' (bundled offline all-MiniLM-L6-v2), a Hugging Face model id "
        "(e.g. gpt2), a local model directory, or 'random' (needs vocab_size and dim).")
    tokenizer: Optional[str] = Field(
        None, description="Tokenizer source; only for source=random (default: minilm). Otherwise the "
        "tokenizer always comes from the embedding's source.")
    vocab_size: Optional[int] = Field(None, ge=2, description="source=random: number of rows.")
    dim: Optional[int] = Field(None, ge=1, description="source=random: embedding width.")
    revision: Optional[str] = Field(None, description="Hub revision of a model id.")
    trust_remote_code: bool = trust_remote_code_field()
    freeze: bool = Field(True, description="Freeze the token embedding (wte) in Phase 2.")

    @model_validator(mode="after")
    def _random_needs_shape(self) -> EmbeddingConfig:
        if self.source == "random" and (self.vocab_size is None or self.dim is None):
            raise ValueError("embedding.source=random needs embedding.vocab_size and embedding.dim")
        if self.source != "random" and (self.vocab_size is not None or self.dim is not None):
            raise ValueError("embedding.vocab_size/dim are only for source=random; a pretrained source "
                             "defines its own shape")
        if self.source != "random" and self.tokenizer is not None:
            raise ValueError("embedding.tokenizer is only for source=random: a pretrained embedding "
                             "always uses its own tokenizer")
        return self


class HeadConfig(Strict):
    tie: bool = Field(True, description="Tie the output head to wte (logits = h · wteᵀ).")
    bias: bool = Field(False, description="Untied head: add a bias (the original had one).")
    init: Literal["copy", "zeros", "normal"] = Field(
        "copy", description="Untied head init: copy of wte (Welch et al.), zeros (original), N(0,0.02²).")
    freeze: bool = Field(False, description="Untied head: freeze it in Phase 2.")


class LMModelConfig(Strict):
    kind: Literal["cvfp", "gpt2", "gru"] = Field(
        "cvfp", description="cvfp: the E案 ContextBlock + TokenBlock model; gpt2 / gru: a reference model on "
        "the same trainable budget (transformers' GPT2Model blocks over inputs_embeds, or torch.nn.GRU) between "
        "the same embedding (wte, embed_norm) and tied head, no Phase 1, every document from its start, trained "
        "on batches of whole documents of about phase2.batch_size targets (model.reference_* set its size).",
        json_schema_extra={"hash_neutral": True})
    reference_layers: int = Field(2, ge=1, json_schema_extra={"hash_neutral": True}, description="model.kind "
                                  "gpt2/gru: layers of the reference core (GPT-2 blocks or GRU layers).")
    reference_heads: int = Field(4, ge=1, json_schema_extra={"hash_neutral": True}, description="model.kind gpt2: "
                                 "attention heads (the width is a multiple of it).")
    reference_width: Optional[int] = Field(
        None, ge=1, json_schema_extra={"hash_neutral": True}, description="model.kind gpt2/gru: hidden width of "
        "the core; null = picked so that its parameter count is the closest to the CVFP TokenBlock's (the CVFP "
        "arm's trainable budget, same embedding and head); the summary records both counts.")
    num_layers: int = Field(6, ge=1, description="Layers in each of ContextBlock and TokenBlock.")
    context_multiplier: int = Field(1, ge=1, description="context_dim = embedding dim × this.")
    num_input_tokens: int = Field(1, ge=1, description="n: tokens concatenated into each input.")
    head: HeadConfig = Field(default_factory=HeadConfig)
    embed_norm: Literal["frozen", "trainable_shared"] = Field(
        "frozen", description="frozen: embed_norm freezes with the ContextBlock (freezelab); "
        "trainable_shared: trains in Phase 2 as in the original; it also feeds the ContextBlock, so with "
        "context.cache=per_epoch the contexts drift every epoch as in the original (with cache=once only the "
        "token path sees the trained norm).")
    use_context: bool = Field(True, description="False = the no_context ablation (contexts set to 0).")


class ContextConfig(Strict):
    reset: Literal["per_document", "stream"] = Field(
        "per_document", description="per_document: c = 0 at each document start; stream: one "
        "continuous stream over all documents (the original).")
    wraparound: bool = Field(False, description="stream only: Phase-1 input at token 0 is the last context.")
    cache_dtype: Literal["float32", "bfloat16"] = Field("float32", description="Context cache dtype.")
    cache: Literal["once", "per_epoch", "online"] = Field(
        "once", json_schema_extra=HASH_NEUTRAL, description="once (freezelab): contexts computed after Phase 1 "
        "with its final parameters and cached for all of Phase 2. per_epoch (cvfp-lm.md §5, §9 flaw 2): "
        "recomputed from the current wte / embed_norm at every Phase-2 epoch start, so a trained embedding or "
        "model.embed_norm=trainable_shared makes the 'frozen' contexts drift. online (faithful): each training "
        "token's context computed inside the loop from the previous token's with the weights of that step, "
        "as the original does (needs phase2.order=contiguous; a per-token ContextBlock call per training token "
        "per epoch, no cache); val and test as per_epoch.")


class Phase1Config(Strict):
    enabled: bool = Field(True, description="False = untrained ContextBlock ablation (no_phase1).")
    max_iterations: int = Field(10, ge=1, description="Iteration 0 (no learning) counts.")
    min_iterations: int = Field(3, ge=1, description="Never stop before this many iterations (iteration 0 counts).")
    convergence_threshold: float = Field(0.03, gt=0, description="A token has converged when mean_d (Y - C)² "
                                         "is below this.")
    min_converged_ratio: float = Field(0.95, gt=0, le=1, description="Stop when this share of tokens converged.")
    lr: float = Field(0.002, gt=0, description="Adam learning rate of the ContextBlock.")
    dist_reg_weight: float = Field(0.5, ge=0, le=1, description="Weight w of the diversity loss.")
    noise_std: float = Field(0.1, ge=0, description="Gaussian noise on the previous contexts in training passes.")
    chunk_rows: int = Field(4096, ge=1, description="Rows per chunk of the parallel pass (gradient accumulation).")
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip before each Adam step.")
    diversity_norm: Literal["faithful", "rms"] = Field(
        "faithful", description="faithful: -‖Y - ȳ‖_F / |chunk| (depends on chunk size); rms: batch-size free.")
    iter0: Literal["sequential", "jacobi"] = Field(
        "sequential", description="Iteration 0: exact recurrence batched over documents, or Jacobi sweeps.")
    er_rows: int = Field(8192, ge=2, description="Rows sampled (seeded, fixed) for effective rank.")
    er: Literal["centred_fixed", "legacy"] = Field(
        "centred_fixed", json_schema_extra=HASH_NEUTRAL, description="The effective rank logged as train/er and "
        "val/er. centred_fixed (freezelab, cvfp-lm.md §4): columns centred, er_rows seeded rows, with the "
        "participation ratio. legacy (faithful): uncentred, min(N, 10,000) rows, entropy of σ/Σσ. Both are "
        "always in summary.json (er_legacy: the faithful one on C^K of the last Phase-1 iteration).")

    @model_validator(mode="after")
    def _min_le_max(self) -> Phase1Config:
        if self.min_iterations > self.max_iterations:
            raise ValueError(f"phase1.min_iterations={self.min_iterations} exceeds "
                             f"phase1.max_iterations={self.max_iterations}")
        return self


class UnfreezeConfig(Strict):
    at_epoch: int = Field(..., ge=1, description="Groups become trainable after this many epochs.")
    groups: list[Literal["embed", "embed_norm", "head"]] = Field(["embed"], description="Groups to unfreeze.")
    lr_scale: float = Field(1.0, gt=0, description="LR scale of the unfrozen groups.")
    optimizer_state: Literal["reset", "keep"] = Field(
        "reset", description="reset: fresh Adam moments for the unfrozen groups; keep: leave them.")
    reset_patience: bool = Field(True, description="Early-stopping patience restarts at the boundary.")


class Phase2Config(Strict):
    max_epochs: int = Field(10, ge=1, description="Epoch budget of Phase 2.")
    batch_size: int = Field(512, ge=1, description="Next-token positions per Adam step (seed: 512).")
    lr: float = Field(0.002, gt=0, description="Adam learning rate (base; each group multiplies its lr scale).")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip over the optimizer's parameters.")
    patience: int = Field(2, ge=1, description="Epochs without val improvement before stopping.")
    order: Literal["shuffled", "contiguous"] = Field(
        "shuffled", description="shuffled positions (seeded per epoch), or contiguous chunks (the original).")
    eval_batch_size: int = Field(1024, ge=1, description="Positions per evaluation batch.")
    loop: Literal["batched", "per_token"] = Field(
        "batched", json_schema_extra=HASH_NEUTRAL,
        description="batched: one TokenBlock call per batch with a fused chunked cross-entropy "
        "(freezelab). per_token: the original's loop, for timing parity only: every position forward and "
        "backward alone (gradients accumulate over the batch, one Adam step per batch, a .item() sync per "
        "token), and evaluation one position at a time; same losses within float rounding, ~30x slower.")
    unfreeze: Optional[UnfreezeConfig] = None

    @model_validator(mode="after")
    def _unfreeze_in_budget(self) -> Phase2Config:
        if self.unfreeze is not None and self.unfreeze.at_epoch >= self.max_epochs:
            raise ValueError(f"phase2.unfreeze.at_epoch={self.unfreeze.at_epoch} must be below "
                             f"phase2.max_epochs={self.max_epochs}")
        return self


class RuntimeConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = bf16 autocast in Phase 2.")
    compile: bool = Field(False, json_schema_extra=HASH_NEUTRAL, description=(
        "torch.compile the TokenBlock (Phase-2 training and evaluation; the same losses within float rounding, "
        "tested on CPU). "
        "For GPUs; on a CPU it needs a C++ compiler and rarely pays."))
    threads: Optional[int] = Field(None, ge=1, description="torch intra-op threads (None = default; with "
                                   "runtime.devices N on a CPU: the cores / N per process).")
    devices: int = Field(1, ge=1, json_schema_extra=HASH_NEUTRAL, description=(
        "Data-parallel Phase-2 training in N processes (CPU: gloo; CUDA: one GPU each, NCCL): each step's batch "
        "is split between them and their gradients summed, the same losses as one process within float rounding "
        "(engine/parallel.py). Data, Phase 1 and evaluation run in every process."))
    checkpoint_minutes: Optional[float] = checkpoint_minutes_field()
    log_every_steps: int = Field(10, ge=0, description="Per-step scalars (train/step_loss, lr/<group>, "
                                 "grad_norm/<group>) to metrics.jsonl, TensorBoard and MLflow every this many "
                                 "optimizer steps; 0: epoch records only.")
    max_nonfinite_steps: int = Field(3, ge=1, json_schema_extra=HASH_NEUTRAL, description="Phase 2: a step "
                                     "whose loss or gradient norm is not finite is skipped (no update; counted "
                                     "as train/skipped_steps, warned in the report); this many in a row fail "
                                     "the run (1: fail at the first).")


class LMConfig(Strict):
    """The resolved configuration of one run of the CVFP embedding-freeze study."""

    data: LMDataConfig = Field(default_factory=LMDataConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    model: LMModelConfig = Field(default_factory=LMModelConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    phase1: Phase1Config = Field(default_factory=Phase1Config)
    phase2: Phase2Config = Field(default_factory=Phase2Config)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    baselines: bool = Field(True, description="Score unigram and Kneser–Ney bigram on the same split.")

    @model_validator(mode="after")
    def _consistent(self) -> LMConfig:
        if self.model.head.tie and self.model.head.freeze != self.embedding.freeze and self.model.head.freeze:
            raise ValueError("model.head.freeze=true with model.head.tie=true: a tied head is the "
                             "embedding itself; set embedding.freeze instead, or untie the head")
        if self.model.head.tie and (self.model.head.bias or self.model.head.init != "copy"):
            raise ValueError("model.head.bias / model.head.init apply to an untied head only; "
                             "set model.head.tie=false")
        m = self.model
        if m.kind != "cvfp":
            bad = [f"{k}={v}" for k, v, ok in (
                ("model.head.tie", m.head.tie, m.head.tie), ("context.reset", self.context.reset,
                 self.context.reset == "per_document"), ("model.num_input_tokens", m.num_input_tokens,
                 m.num_input_tokens == 1), ("model.use_context", m.use_context, m.use_context),
                ("phase2.unfreeze", self.phase2.unfreeze, self.phase2.unfreeze is None),
                ("context.cache", self.context.cache, self.context.cache == "once"),
                ("phase2.loop", self.phase2.loop, self.phase2.loop == "batched")) if not ok]
            if bad:
                raise ValueError(f"model.kind={m.kind} (a reference model, no contexts) runs with a tied head, "
                                 "per-document reset, one input token, no context ablation or cache, no unfreezing, "
                                 f"the batched loop; got "
                                 f"{', '.join(bad)}. Drop these overrides from the reference arm.")
            if m.kind == "gpt2" and m.reference_width is not None and m.reference_width % m.reference_heads:
                raise ValueError(f"model.reference_width={m.reference_width} is not a multiple of "
                                 f"model.reference_heads={m.reference_heads}; pick a multiple, or leave the width "
                                 "null to match the CVFP budget")
            if m.kind == "gpt2" and self.data.max_tokens_per_doc is None:
                raise ValueError("model.kind=gpt2 needs data.max_tokens_per_doc (the length of its learned "
                                 "position table); set it, e.g. 512")
        if self.context.wraparound and self.context.reset != "stream":
            raise ValueError("context.wraparound=true needs context.reset=stream")
        if self.context.cache != "once" and not self.model.use_context:
            raise ValueError(f"context.cache={self.context.cache} with model.use_context=false: the contexts are 0 "
                             "and nothing is recomputed; drop context.cache or set model.use_context=true")
        if self.runtime.devices > 1 and (self.context.cache == "online" or self.phase2.loop == "per_token"):
            raise ValueError(f"runtime.devices={self.runtime.devices} splits each batch between processes; "
                             + ("context.cache=online computes the batch's contexts one token after another"
                                if self.context.cache == "online" else "phase2.loop=per_token is the original's "
                                "one-position-at-a-time loop") + ". Use runtime.devices: 1 with it")
        if self.context.cache == "online" and self.phase2.order != "contiguous":
            raise ValueError("context.cache=online computes each token's context from the one before it, in stream "
                             "order, as the original does; it needs phase2.order=contiguous (now "
                             f"{self.phase2.order}). Set phase2.order: contiguous, or use context.cache=per_epoch")
        u = self.phase2.unfreeze
        if u is not None:
            if "embed" in u.groups and not self.embedding.freeze:
                raise ValueError("phase2.unfreeze.groups has 'embed' but embedding.freeze=false: "
                                 "it is trainable from the start")
            if "head" in u.groups and (self.model.head.tie or not self.model.head.freeze):
                raise ValueError("phase2.unfreeze.groups has 'head' but the head is tied or not frozen")
        return self


# Keys that define comparability (protocol §2); an arm may change them only via allow_confound.
PROTECTED_KEYS: tuple[str, ...] = (
    "data", "phase2.max_epochs", "phase2.batch_size", "phase2.patience", "phase2.eval_batch_size", "phase2.order",
    "phase1.max_iterations", "phase1.er_rows", "runtime.precision", "runtime.compile",
    "runtime.devices")
