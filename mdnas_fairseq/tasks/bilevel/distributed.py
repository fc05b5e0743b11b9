"""Data-parallel helpers: this worker's rank, the number of workers, sums over workers."""

import torch
from fairseq.distributed import utils as distributed_utils


def world_size() -> int:
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 1
    return distributed_utils.get_data_parallel_world_size()


def rank() -> int:
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 0
    return distributed_utils.get_data_parallel_rank()


def is_master() -> bool:
    return rank() == 0


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the workers in place. It must live on the model's device (NCCL
    reduces GPU tensors only)."""
    if world_size() > 1:
        distributed_utils.all_reduce(tensor, group=distributed_utils.get_data_parallel_group())
    return tensor
