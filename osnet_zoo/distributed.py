"""Small helpers for torch.distributed, launched by ``torchrun`` (one node or many).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything runs in one process.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

import torch
import torch.distributed as dist

__all__ = ['init_distributed', 'is_distributed', 'get_rank', 'get_world_size', 'is_main_process',
           'barrier', 'main_process_first', 'all_gather_cat', 'reduce_mean', 'cleanup', 'broadcast_object',
           'any_rank', 'fail_together', 'RankFailed']


class RankFailed(RuntimeError):
    """Raised on the ranks that did not fail when another rank did; the message is that rank's error."""


def is_distributed() -> bool:
    """True when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a single process."""
    return get_rank() == 0


def init_distributed(device: str) -> torch.device:
    """Join the process group when launched by torchrun; return this process's device.

    NCCL on CUDA, gloo on CPU. ``device`` 'cuda' maps to ``cuda:LOCAL_RANK``.
    """
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return torch.device(device)
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    use_cuda = device.startswith('cuda')
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not is_distributed():
        dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
    return torch.device(f'cuda:{local_rank}') if use_cuda else torch.device(device)


def barrier() -> None:
    """Wait until every rank gets here (nothing without a process group)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on the main process first, then on the others: for work that one process must do
    before the rest can read it (generating a synthetic dataset, extracting CUHK03's images). A failure on
    any rank is raised on every rank (:func:`fail_together`), so no rank is left waiting."""
    if is_main_process():
        with fail_together():
            yield
        with fail_together():  # the others' turn
            pass
    else:
        with fail_together():  # the main process's turn
            pass
        with fail_together():
            yield


def broadcast_object(obj: Any) -> Any:
    """The main process's ``obj`` on every rank (a picklable object: a path list, a flag)."""
    if not is_distributed():
        return obj
    box = [obj if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not is_distributed():
        return flag
    flags: List[Any] = [None] * get_world_size()
    dist.all_gather_object(flags, bool(flag))
    return any(flags)


@contextmanager
def fail_together() -> Iterator[None]:
    """Run a block on every rank and fail on every rank when it fails on one (a collective: every rank
    must enter it), so that no rank waits forever in a later collective for a rank that has stopped.

    The failing rank re-raises its own exception; the others raise :class:`RankFailed` with the message of
    the lowest failing rank. Without torch.distributed it is a plain block.
    """
    error: Optional[BaseException] = None
    try:
        yield
    except Exception as e:  # shared with the other ranks below, then re-raised here
        error = e
    if is_distributed():
        messages: List[Any] = [None] * get_world_size()
        dist.all_gather_object(messages, None if error is None else ' '.join(str(error).split()) or
                               type(error).__name__)
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if failed and error is None:
            rank, message = failed[0]
            raise RankFailed(f'{message} (on rank {rank})')
    if error is not None:
        raise error


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over all ranks along dim 0 (sizes may differ per rank), in rank order."""
    if not is_distributed():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes: List[torch.Tensor] = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    gathered = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a scalar over ranks (for logging)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / get_world_size()


def cleanup() -> None:
    """Leave the process group, where one was joined."""
    if is_distributed():
        dist.destroy_process_group()
