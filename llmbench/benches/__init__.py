"""One module per subcommand. Each declares its cases and how to run one; nothing else."""

from __future__ import annotations

import importlib

from llmbench.core.benchmark import Benchmark

# name -> "module:class"; imported on demand so that listing benchmarks imports no torch.
_REGISTRY = {
    "attention": "llmbench.benches.attention:AttentionBenchmark",
    "kvcache": "llmbench.benches.kvcache:KVCacheBenchmark",
    "amp": "llmbench.benches.amp:AmpBenchmark",
    "checkpoint": "llmbench.benches.checkpoint:CheckpointBenchmark",
    "optim": "llmbench.benches.optim:OptimBenchmark",
    "accum": "llmbench.benches.accum:AccumBenchmark",
    "align": "llmbench.benches.align:AlignBenchmark",
    "precision": "llmbench.benches.precision:PrecisionBenchmark",
    "tune": "llmbench.benches.tune:TuneBenchmark",
    "schedule": "llmbench.benches.schedule:ScheduleBenchmark",
    "comm": "llmbench.benches.comm:CommBenchmark",
    "ddp": "llmbench.benches.ddp:DDPBenchmark",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Benchmark:
    module, _, cls = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
