"""Hyper-X's networks: what `methods.hyperx` builds, with torch (loaded on use)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from bench.errors import BenchError
from bench.heads import EncoderWithHeads
from bench.method import Backbone
from bench.model import Output
from bench.settings import ModelPlan, Pair
from bench.task import Task
from methods.hyperx import HyperXConfig, embedded_languages, untrained_languages


class _Generate(torch.autograd.Function):
    """`source @ weight + bias`, whose weight gradient is written into a buffer kept across steps.

    The generators hold almost all of Hyper-X's parameters (76 M on mBERT) but see a handful of
    rows per batch, so their gradient is a thin GEMM whose cost is memory: allocating a fresh
    150 MB gradient each step (PyTorch's default) cost 4x the GEMM itself in page faults
    (measured on CPU, mBERT shape: 0.21 s against 0.02 s per generator).
    """

    @staticmethod
    def forward(ctx, source, weight, bias, owner):
        ctx.save_for_backward(source, weight)
        ctx.owner = owner
        return torch.addmm(bias, source, weight)

    @staticmethod
    def backward(ctx, grad):
        source, weight = ctx.saved_tensors
        if ctx.needs_input_grad[1]:
            # under bf16 autocast the forward ran in bfloat16: the weight's gradient, like the
            # weight, is float32
            rows, wide = source.t().to(weight.dtype), grad.to(weight.dtype)
            if weight.grad is None:  # after zero_grad(set_to_none=True): overwrite the buffer
                buffer = ctx.owner.grad_buffer(weight)
                torch.mm(rows, wide, out=buffer)
                weight.grad = buffer
            else:
                weight.grad.addmm_(rows, wide)
        grad_source = grad.mm(weight.t().to(grad.dtype)) if ctx.needs_input_grad[0] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_source, None, grad_bias, None


class Generator(nn.Module):
    """A linear map from the source embedding to one generated tensor, flattened."""

    def __init__(self, source_dim: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(source_dim, size))  # (in, out): see _Generate
        self.bias = nn.Parameter(torch.empty(size))
        self._grad_buffer: torch.Tensor | None = None

    def grad_buffer(self, weight: torch.Tensor) -> torch.Tensor:
        if self._grad_buffer is None or self._grad_buffer.device != weight.device:
            self._grad_buffer = torch.empty_like(weight)
        return self._grad_buffer

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return _Generate.apply(source, self.weight, self.bias, self)


class HyperNetwork(nn.Module):
    """(task, language) -> every layer's adapter weights, stacked along a leading layer axis."""

    def __init__(
        self,
        tasks: list[str],
        languages: list[str],
        layers: int,
        hidden_size: int,
        config: HyperXConfig,
        typology: torch.Tensor | None = None,
        untrained: Sequence[str] = (),
    ) -> None:
        """`typology`: the languages' typological vectors (a row each), which
        `config.language_source` typology or both needs; `untrained`: languages whose learned
        embedding never trains (under both, typology alone serves them)."""
        super().__init__()
        self.task_index = {name: i for i, name in enumerate(tasks)}
        self.language_index = {name: i for i, name in enumerate(languages)}
        e, b, h = config.embedding_dim, config.bottleneck, hidden_size
        self.source, self.language_dropout = config.language_source, config.language_dropout
        self.task_embedding = nn.Embedding(len(tasks), e)
        self.language_embedding = (
            nn.Embedding(len(languages), e) if self.source != "typology" else None
        )
        if self.source != "learned":
            if typology is None:
                raise ValueError(f"language_source={self.source} needs the languages' typology")
            # not in the state dict: the vectors come from the suite, not from training
            self.register_buffer("typology", typology.float(), persistent=False)
            self.typology_projector = nn.Sequential(
                nn.Linear(typology.shape[1], e), nn.ReLU(), nn.Linear(e, e)
            )
        self.register_buffer(
            "learned_mask",
            torch.tensor([float(language not in untrained) for language in languages]),
            persistent=False,
        )
        self.layer_embedding = nn.Embedding(layers, e)
        self.projector = nn.Sequential(
            nn.Linear(3 * e, 3 * e), nn.ReLU(), nn.Linear(3 * e, config.source_dim)
        )
        self.shapes = {
            "down": (b, h),
            "down_bias": (b,),
            "up": (h, b),
            "up_bias": (h,),
            "gain": (h,),
            "bias": (h,),
        }
        self.generators = nn.ModuleDict(
            {
                name: Generator(config.source_dim, math.prod(shape))
                for name, shape in self.shapes.items()
            }
        )
        self.reset_parameters(config.projector_init)

    def reset_parameters(self, projector_init: str = "pytorch") -> None:
        for table in (self.task_embedding, self.language_embedding, self.layer_embedding):
            if table is not None:
                nn.init.normal_(table.weight, 0.0, 1.0)
        linears = [m for m in self.projector if isinstance(m, nn.Linear)]
        for linear in linears:
            if projector_init == "reference":
                nn.init.normal_(linear.weight, 0.0, 0.01)
                nn.init.zeros_(linear.bias)
            else:
                linear.reset_parameters()
        for generator in self.generators.values():
            nn.init.normal_(generator.weight, 0.0, 0.01)
            nn.init.zeros_(generator.bias)

    def language(self, index: int) -> torch.Tensor:
        """The language's embedding, as `language_source` makes it."""
        if self.source == "learned":
            return self.language_embedding.weight[index]
        typological = self.typology_projector(self.typology[index])
        if self.source == "typology":
            return typological
        # both: the learned part, dropped as a whole (and the rest scaled) in training; a
        # language whose learned embedding never trained gets typology's alone
        keep = F.dropout(self.learned_mask[index : index + 1], self.language_dropout, self.training)
        return typological + keep * self.language_embedding.weight[index]

    def forward(self, pair: Pair) -> dict[str, torch.Tensor]:
        layers = self.layer_embedding.weight
        n = layers.shape[0]
        task = self.task_embedding.weight[self.task_index[pair.task]]
        language = self.language(self.language_index[pair.language])
        source = torch.cat([task.expand(n, -1), language.expand(n, -1), layers], dim=-1)
        projected = self.projector(source)
        return {
            name: generator(projected).view(n, *self.shapes[name])
            for name, generator in self.generators.items()
        }


def output_dropouts(encoder: nn.Module) -> list[nn.Module]:
    """Each layer's FFN output dropout (BERT-style encoders: `encoder.layer[i].output.dropout`)."""
    try:
        return [layer.output.dropout for layer in encoder.encoder.layer]
    except AttributeError:
        kind = type(encoder).__name__
        raise BenchError(
            f"Hyper-X needs a BERT-style encoder (encoder.layer[i].output.dropout); {kind} has none"
        ) from None


class HyperXModel(EncoderWithHeads):
    def __init__(
        self, backbone: Backbone, plan: ModelPlan, tasks: dict[str, Task], config: HyperXConfig
    ) -> None:
        backbone.model.requires_grad_(False)  # the encoder and the MLM head with its tied decoder
        for module in backbone.encoder.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
        super().__init__(backbone, tasks, config)
        dropouts = output_dropouts(self.encoder)
        languages = embedded_languages(plan, config)
        self.untrained = untrained_languages(plan, config)  # learned embeddings never trained
        typology = None
        if config.language_source != "learned":
            if backbone.typology is None:
                raise ValueError("language_source typology needs Backbone.typology")
            typology = torch.tensor([list(backbone.typology(lang)) for lang in languages])
        self.hypernetwork = HyperNetwork(
            list(tasks), languages, len(dropouts), backbone.hidden_size, config, typology,
            self.untrained,
        )  # fmt: skip
        self.language_source = config.language_source
        self._weights: dict[str, torch.Tensor] | None = None
        self._cached: tuple[Pair, dict[str, torch.Tensor]] | None = None
        for index, dropout in enumerate(dropouts):
            dropout.register_forward_hook(self._adapter(index))

    def _adapter(self, index: int):
        def hook(module: nn.Module, inputs: tuple, x: torch.Tensor) -> torch.Tensor:
            w = self._weights
            if w is None:
                raise RuntimeError("Hyper-X adapter ran outside HyperXModel.forward")
            z = F.relu(F.linear(x, w["down"][index], w["down_bias"][index]))
            z = F.linear(z, w["up"][index], w["up_bias"][index])
            return x + F.layer_norm(z, z.shape[-1:], w["gain"][index], w["bias"][index])

        return hook

    def part(self, name: str) -> str:
        if name.startswith("hypernetwork.typology_projector."):
            return "typology projector"
        return super().part(name)

    def language_notes(self) -> dict[str, str]:
        why = "untrained language embedding (no labels, no MLM text)"
        if self.language_source != "learned":
            why = "language embedding from typology alone (no labels, no MLM text)"
        return {language: why for language in self.untrained}

    def generate(self, pair: Pair) -> dict[str, torch.Tensor]:
        """Every layer's adapter weights for `pair` (what the hooks use)."""
        return self.hypernetwork(pair)

    def prepare_eval(self, pair: Pair) -> None:
        with torch.no_grad():
            self._cached = (pair, self.generate(pair))

    def train(self, mode: bool = True) -> HyperXModel:
        if mode:
            self._cached = None  # training changes the hypernetwork: cached weights go stale
        return super().train(mode)

    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output:
        if not self.training and self._cached is not None and self._cached[0] == pair:
            self._weights = self._cached[1]
        else:
            self._weights = self.generate(pair)
        try:
            return super().forward(batch, pair)  # the encoder's hooks read self._weights
        finally:
            self._weights = None
