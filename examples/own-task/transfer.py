"""Your own model and data in freezelab: a small pretrained encoder, transferred to a task with few labels.

A freezelab task is the five methods below (docs/plugins.md): `freezelab run examples/own-task/transfer.yaml`.
The data: 16-dimensional observations of a hidden 4-dimensional state. The encoder was pretrained (here, once per
process, deterministically) to recover that state from plenty of calibrated data; the new task classifies a readout
of the state from ``n_train`` labels. Freeze the encoder (linear probe), fine-tune it, both in turn (LP-FT), or
start from a random one?
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

import freezelab
from freezelab import Metric, Splits

DIM, STATE, HIDDEN = 16, 4, 32


class Options(BaseModel):
    n_train: int = Field(40, ge=10, description="Labelled training examples of the new task.")
    n_eval: int = Field(400, ge=20, description="Validation and test examples each.")
    pretrained: bool = Field(True, description="Start the encoder from the pretrained weights (false: random).")
    noise: float = Field(0.3, ge=0, description="Observation noise.")


def observe(n: int, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, state): observations of random hidden states through one fixed nonlinear sensor."""
    sensor = np.random.default_rng(1234).normal(size=(STATE, DIM))  # the world: the same in every split
    state = rng.normal(size=(n, STATE))
    x = np.tanh(2 * state @ sensor) + noise * rng.normal(size=(n, DIM))
    return x.astype(np.float32), state


def readout(state: np.ndarray, seed: int, classes: int) -> np.ndarray:  # a task: one readout of the state
    return (state @ np.random.default_rng(seed).normal(size=(STATE, classes))).argmax(axis=1)

@functools.lru_cache(maxsize=1)
def pretrained_encoder() -> dict[str, torch.Tensor]:
    """The encoder pretrained on 20,000 calibrated examples to recover the hidden state (a fixed recipe: the same
    weights every time)."""
    torch.manual_seed(0)
    x, state = observe(20_000, np.random.default_rng(0), 0.3)
    x, state = torch.as_tensor(x), torch.as_tensor(state, dtype=torch.float32)
    encoder, head = make_encoder(), nn.Linear(HIDDEN, STATE)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(800):
        rows = torch.randint(0, len(x), (256,))
        loss = F.mse_loss(head(encoder(x[rows])), state[rows])
        opt.zero_grad(), loss.backward(), opt.step()
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def make_encoder() -> nn.Sequential:
    return nn.Sequential(nn.Linear(DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU())


class Classifier(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.encoder, self.head = make_encoder(), nn.Linear(HIDDEN, classes)  # (B, 16) -> (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class TransferTask(freezelab.Task):
    name = "toy-transfer"
    Options = Options
    metrics = {"loss": Metric("loss_sum", "count", "min"), "acc": Metric("correct", "count", "max")}
    selection = "loss"
    classes = 3

    def load_data(self, options: Options, data_seed: int) -> Splits:
        rng = np.random.default_rng(data_seed)
        parts = {}
        for name, n in (("train", options.n_train), ("val", options.n_eval), ("test", options.n_eval)):
            x, state = observe(n, rng, options.noise)
            parts[name] = [{"x": xi, "y": int(yi)} for xi, yi in zip(x, readout(state, 99, self.classes))]
        return Splits(**parts, info={"classes": self.classes})

    def build_model(self, options: Options, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = Classifier(self.classes)
        if options.pretrained:
            model.encoder.load_state_dict(pretrained_encoder())
        return model

    def param_groups(self, model: Classifier) -> dict[str, nn.Module]:
        return {"encoder.0": model.encoder[0], "encoder.1": model.encoder[2], "head": model.head}

    def loss(self, model: Classifier, batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch["x"]), batch["y"])

    def score(self, model: Classifier, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(batch["x"])
        return {"loss_sum": F.cross_entropy(logits, batch["y"], reduction="none"),
                "correct": (logits.argmax(dim=1) == batch["y"]).float(), "count": torch.ones(len(logits))}

    def baselines(self, splits: Splits, options: Options) -> dict:
        """The majority class of the training labels, and their frequencies as the predicted distribution."""
        counts = np.bincount([it["y"] for it in splits.train], minlength=self.classes) + 1.0
        p = counts / counts.sum()
        out = {}
        for split in ("val", "test"):
            y = np.array([it["y"] for it in splits.part(split)])
            out[split] = {"loss_sum": -np.log(p[y]), "correct": (y == p.argmax()).astype(float),
                          "count": np.ones(len(y))}
        return {"majority": out}

    def pretrained(self, options: Options) -> str | None:
        weights = b"".join(t.numpy().tobytes() for t in pretrained_encoder().values())
        return f"toy encoder sha256:{hashlib.sha256(weights).hexdigest()}" if options.pretrained else None
