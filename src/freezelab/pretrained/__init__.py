"""Pretrained parts from Hugging Face: ``load_encoder`` (a whole encoder, for a task to build from),
``load_embedding`` and ``load_tokenizer``; explicit errors, never a silent random fallback (``hf.py``)."""

from freezelab.pretrained.hf import LoadedEncoder, load_embedding, load_encoder, load_tokenizer

__all__ = ["LoadedEncoder", "load_embedding", "load_encoder", "load_tokenizer"]
