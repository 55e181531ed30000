"""This process's place among the training ranks, and the few collectives training needs.

A single-process run uses :meth:`Ranks.single`, whose collectives are identities, so the
trainer has one code path for 1 and N processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """Global rank, number of ranks and the rank within this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives' tensors live (NCCL needs CUDA tensors)

    @classmethod
    def single(cls) -> Ranks:
        return cls()

    @classmethod
    def from_process_group(cls, local_rank: int, device: str = "cpu") -> Ranks:
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, device)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the model, metrics and registry entry."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of ``rows`` (parts differ in size by at most one)."""
        return rows.tensor_split(self.world_size)[self.rank] if self.distributed else rows

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        return bool(self.max(int(flag)))

    def max(self, value: int) -> int:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def min(self, value: int) -> int:
        return -self.max(-value)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (float64 on CPU, so the order of ranks barely matters)."""
        if not self.distributed:
            return values
        total = values.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(total)
        return total.cpu()

    def gather_rows(self, part: torch.Tensor, total_rows: int) -> torch.Tensor:
        """Concatenate every rank's :meth:`shard` result (on CPU) in rank order."""
        if not self.distributed:
            return part
        sizes = [len(chunk) for chunk in torch.arange(total_rows).tensor_split(self.world_size)]
        padded = torch.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype, device=self.device)
        padded[: len(part)] = part.to(self.device)
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        return torch.cat([g[:n].cpu() for g, n in zip(gathered, sizes, strict=True)])

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
