"""A histogram loss under DDP equals the single-process loss, gradients included.

Two processes on this machine (gloo on loopback) each hold half of a batch. Each
computes the global soft histogram of its model's outputs with ``group=``, the same
global loss, and one backward; DDP averages the parameter gradients. The result
matches one process that sees the whole batch.

    python examples/ddp_histogram_loss.py
"""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import softhist

WORLD = 2


def make_batch():
    return torch.randn(1000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def histogram_loss(model, samples, group):
    target = torch.full((16,), 1000 / 16, dtype=torch.float64)  # a flat target histogram
    hist = softhist.histc(model(samples).squeeze(-1), bins=16, min=-3, max=3, group=group)
    return (hist - target).pow(2).mean()


def new_model():
    torch.manual_seed(1)
    return torch.nn.Linear(1, 1).double()


def worker(rank, port, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    model = DistributedDataParallel(new_model())
    shard = make_batch().chunk(WORLD)[rank]
    loss = histogram_loss(model, shard, dist.group.WORLD)  # the global loss, identical on every rank
    loss.backward()  # DDP averages the gradients over ranks
    if rank == 0:
        queue.put([p.grad.tolist() for p in model.parameters()])  # plain lists: tensors would need shared memory
    del model  # DDP holds the process group: let it go, and let every rank get here, before tearing down
    dist.barrier()
    dist.destroy_process_group()


def main():
    single = new_model()
    histogram_loss(single, make_batch(), None).backward()
    expected = [p.grad for p in single.parameters()]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(worker, args=(port, queue), nprocs=WORLD, join=True)
    got = queue.get()
    difference = max((torch.tensor(g, dtype=torch.float64) - e).abs().max().item() for g, e in zip(got, expected))
    print(f"max |DDP gradient - single-process gradient| = {difference:.3g}")
    if difference > 1e-9:
        raise SystemExit("gradients differ")
    print("match")


if __name__ == "__main__":
    main()
