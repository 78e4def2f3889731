"""What a method builds: a `Model` (a torch module) whose forward returns an `Output`."""

from __future__ import annotations

import abc
import dataclasses

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bench.settings import Pair


@dataclasses.dataclass
class Output:
    loss: torch.Tensor
    logits: torch.Tensor  # token tasks: (batch, seq, labels); sentence: (batch, labels)


class Model(nn.Module, abc.ABC):
    """What a method builds. One (task, language) pair per batch."""

    @abc.abstractmethod
    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output: ...

    def prepare_eval(self, pair: Pair) -> None:
        """Called before evaluating `pair`; methods that can precompute per pair do it here."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def part(self, name: str) -> str:
        """The part of the model a parameter belongs to, for parameter counts: its top module,
        with LayerNorms apart (methods that train only the LayerNorms of a part show it)."""
        part = name.split(".")[0]
        return f"{part} LayerNorms" if "LayerNorm" in name or "layer_norm" in name else part

    def stage_of(self, name: str) -> str | None:
        """The stage that trained this (now frozen) parameter before the model, if any."""
        return None

    def language_notes(self) -> dict[str, str]:
        """Languages this model serves otherwise than its other languages, each with a short
        phrase (MAD-X: `no text: ran on lang_eng`): reports mark their scores with it."""
        return {}

    def notes(self) -> dict[str, str]:
        """Facts about how this model was built that a reader of the run must know (a fallback
        taken, say); the runner logs them as run tags."""
        return {}

    def save(self, path: str) -> None:
        """Save the trainable weights (the frozen ones come from the backbone)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items() if k in names}
        save_file(state, path)

    def load(self, path: str) -> None:
        state = load_file(path)
        result = self.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(
                f"checkpoint {path} has unexpected weights {result.unexpected_keys[:3]}"
            )


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total). `parameters()` yields a shared tensor once: tied weights count once."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
