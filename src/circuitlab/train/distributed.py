"""Devices and DistributedDataParallel ranks (gloo on CPU, nccl on CUDA) for ``torchrun``."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import attrs

from ..errors import CircuitlabError


@attrs.frozen
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown_distributed(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()


def pick_device(dist: Dist) -> Any:
    """This rank's GPU when CUDA is there (and CIRCUITLAB_DEVICE is not cpu), else the CPU."""
    import torch

    if torch.cuda.is_available() and os.environ.get("CIRCUITLAB_DEVICE", "") != "cpu":
        if dist.local_rank >= torch.cuda.device_count():
            # Falling back to the CPU here would mix nccl and gloo ranks in one job, which hangs.
            raise CircuitlabError(f"process with LOCAL_RANK {dist.local_rank} has no GPU of its own "
                                  f"({torch.cuda.device_count()} visible); use --nproc_per_node <= "
                                  f"{torch.cuda.device_count()} or CIRCUITLAB_DEVICE=cpu")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def autocast(device: Any):
    """bf16 autocast on CUDA (bf16's range needs no GradScaler, unlike the paper's fp16); fp32 on CPU."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
