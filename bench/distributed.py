"""Data-parallel training (DDP) through `accelerate`.

`bench run --processes N` starts N copies of the same `bench run` with `accelerate launch`;
`accelerate launch -m bench run ...` does the same by hand, with accelerate's own flags (GPUs,
machines). Each process reads the data and builds the same model. Each training step draws one
batch (one pair) the same way in every process, and each process trains on its share of the
batch's examples. DDP averages the gradients, and each share's loss is weighted by its share of
the examples, so that a step is the step one process would take on the whole batch (exactly so
for a loss averaged over examples; for one averaged over tokens, nearly). Process 0 alone talks to
MLflow, evaluates, selects and writes checkpoints and stage folders; the others only train.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import socket
from datetime import timedelta
from typing import Any

import torch

from bench.errors import BenchError

# Process 0 evaluates while the others wait at their next collective: allow for long evaluations.
TIMEOUT = timedelta(hours=6)


@dataclasses.dataclass
class Group:
    """This process's place in a data-parallel run (rank 0 of 1 when there is none)."""

    rank: int
    size: int
    device: torch.device
    accelerator: Any = None  # accelerate.Accelerator, in a data-parallel run

    @property
    def main(self) -> bool:
        """Whether this process logs, evaluates and writes."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """What a training step calls: DDP around `model` in a data-parallel run. Parameters a
        step does not use (the heads of other tasks) are allowed."""
        return model if self.size == 1 else self.accelerator.prepare_model(model)

    def release(self) -> None:
        """Forgets the models `wrap` prepared (a run trains several in turn)."""
        if self.accelerator is not None:
            self.accelerator.free_memory()

    def shard(self, indices: list[int]) -> tuple[list[int], float]:
        """This process's share of a batch, and the weight of its loss. A batch with fewer
        examples than processes leaves some without a share: they run an example with weight 0,
        since every process must take part in every step."""
        if self.size == 1:
            return indices, 1.0
        share = indices[self.rank :: self.size]
        if not share:
            return indices[:1], 0.0
        return share, self.size * len(share) / len(indices)

    def reduce(self, loss: torch.Tensor, weight: float, tokens: int) -> tuple[float, int]:
        """The batch's loss (the shares' losses, weighted) and its tokens, over every process."""
        if self.size == 1:
            return loss.item(), tokens
        summed = torch.tensor(
            [loss.item() * weight / self.size, float(tokens if weight else 0)],
            dtype=torch.float64,
            device=self.device,
        )
        torch.distributed.all_reduce(summed)
        return summed[0].item(), int(summed[1].item())

    def barrier(self) -> None:
        if self.size > 1:
            self.accelerator.wait_for_everyone()

    def first(self) -> contextlib.AbstractContextManager:
        """Process 0 runs the block before the others (it writes the caches they then read)."""
        if self.size == 1:
            return contextlib.nullcontext()
        return self.accelerator.main_process_first()


def launched() -> int:
    """How many processes `accelerate launch` (or torchrun) started this one among; 1: none."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@functools.cache
def current() -> Group:
    """This process's Group; in a launched process, the process group is set up here."""
    if launched() == 1:
        return Group(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if precision != "no":  # it would autocast behind the run's back, unlogged
        raise BenchError(
            f"accelerate's --mixed_precision {precision} is not used by bench; launch with "
            "--mixed_precision no and pass --precision bf16 (train.precision), which the run logs"
        )
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # gloo across CPU processes; NCCL across GPUs
        mixed_precision="no",
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True),
            InitProcessGroupKwargs(timeout=TIMEOUT),
        ],
    )
    return Group(
        accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator
    )


def launch(argv: list[str], processes: int) -> int:
    """Runs `python -m bench ARGV` in `processes` processes through accelerate's launcher (one
    per GPU on a machine with as many; CPU processes with gloo otherwise), and returns the exit
    status of process 0 (130 when interrupted). Ctrl-C and SIGTERM reach the processes, which
    stop the run and save its checkpoint."""
    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise BenchError(
            f"--processes {processes} is more than the {torch.cuda.device_count()} GPUs here"
        )
    importlib.import_module("torch.distributed.run")  # its loggers, quietened below
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # the processes say what went wrong; the launcher's own notes and tracebacks would bury it
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.ERROR)
    args = launch_command_parser().parse_args(
        ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()), "-m", "bench", *argv]
    )  # fmt: skip
    try:
        launch_command(args)
    except ChildFailedError as error:
        failed = error.failures.get(0) or error.failures[min(error.failures)]
        return failed.exitcode if failed.exitcode > 0 else 130  # < 0: ended by a signal
    except SignalException:  # the launcher's own Ctrl-C or SIGTERM, after the processes ended
        return 130
    return 0


def _free_port() -> int:
    """A TCP port nothing listens on, for process 0 to meet the others at (several runs can
    then be launched side by side)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
