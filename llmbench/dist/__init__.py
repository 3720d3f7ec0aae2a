"""Running a benchmark's cases on every rank of a torch.distributed process group.

Two ways in, one code path:

- `llmbench comm --nproc N` on one machine: the parent starts torchrun (`python -m
  torch.distributed.run --standalone`), whose N ranks run `python -m llmbench.dist.rank`; the
  parent plans the cases, reads rank 0's results as they finish, watches every rank's status
  file for failures and hangs, and builds the results document (`torchrun.TorchrunGroup`).
- under a launch that already exists (torchrun, or srun with several tasks): this process is a
  rank; every rank runs the cases and only rank 0 renders and writes (`inprocess`).

A case function runs on every rank in lock step. It separates what may fail on one rank alone
(allocating buffers, checking results), after which the ranks agree on one outcome, from the
collectives themselves, where a failure leaves the group unusable and stops the rank (`group`).
"""
