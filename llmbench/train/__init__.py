"""What the training benchmarks share: data, the training step, optimizers, schedules,
checkpointing policies (and, later, the alignment losses). Modules import torch; this package
file does not."""
