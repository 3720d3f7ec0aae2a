"""train.footprint: model states against the ZeRO paper's formulas and torch's own tensors,
FLOPs against the 6N rule and train.traffic, fit searches, on real presets and models."""

import math

import pytest

from llmbench.models.hf import load_config
from llmbench.train import footprint as fp
from llmbench.train.memory_model import Arch

LLAMA3 = Arch.from_hf(load_config("llama-3-8b"))


def test_llama3_8b_counts_transformers_parameters():
    assert LLAMA3.param_count() == 8_030_261_248
    assert sum(math.prod(s) for s in LLAMA3.param_shapes()) == 8_030_261_248


@pytest.mark.parametrize(("stage", "gpus", "per_param"), [
    (0, 1, 16.0), (0, 8, 16.0), (1, 8, 2 + 2 + 12 / 8), (2, 8, 2 + (2 + 12) / 8),
    (3, 8, 16 / 8), (3, 64, 16 / 64)])
def test_mixed_adamw_is_the_zero_papers_16_bytes(stage, gpus, per_param):
    """Rajbhandari et al. 2020, section 5.1: (2 + 2 + K) Psi with K = 12, sharded by stage.
    torch's 4-byte step counter per tensor comes on top of the optimizer's share."""
    x = fp.Inputs(batch=1, seq=4096, precision="bf16-mixed", zero_stage=stage, gpus=gpus)
    f = fp.footprint(LLAMA3, x)
    n = 8_030_261_248
    counters = 4 * len(LLAMA3.param_shapes())  # 291 tensors, each with its step on every GPU
    assert counters == 1164 and f["step_counter_bytes"] == counters
    assert f["model_state_bytes"] - counters == pytest.approx(per_param * n, rel=1e-12)
    assert f["bytes_per_param"] == 16.0


def test_layouts_and_optimizers():
    n = LLAMA3.param_count()
    tensors = len(LLAMA3.param_shapes())
    autocast = fp.model_states(LLAMA3, "adamw", fp.layout("bf16-mixed", "autocast"))
    assert (autocast.weights, autocast.grads) == (4 * n, 4 * n)
    assert autocast.optimizer == 8 * n + 4 * tensors
    sgd = fp.model_states(LLAMA3, "sgd", fp.layout("fp32"))
    assert sgd.optimizer == 0 and sgd.total == 8 * n
    pure = fp.model_states(LLAMA3, "sgd-momentum", fp.layout("bf16"))
    assert pure.optimizer == 2 * n
    factored = fp.model_states(LLAMA3, "adafactor", fp.layout("fp32"))
    assert 0 < factored.optimizer < 0.01 * n  # rows + columns per matrix
    with pytest.raises(ValueError, match="unknown precision"):
        fp.layout("fp8")


def test_states_equal_the_real_optimizers_tensors():
    """The prediction against torch: a built-in model, trained one step, every optimizer
    whose state torch builds here."""
    torch = pytest.importorskip("torch")
    from llmbench.models.sizes import build
    from llmbench.train.optimizers import OPTIMIZERS, measured_state_bytes

    arch = Arch.from_size("tiny")
    for name, spec in OPTIMIZERS.items():
        if spec.unavailable() or name == "adam8bit":
            continue
        torch.manual_seed(0)
        model = build("tiny")
        params = list(model.parameters())
        opt = spec.build(params, lr=1e-3)
        model(torch.randint(0, 256, (2, 9))).float().mean().backward()
        opt.step()
        predicted = fp.model_states(arch, name, fp.layout("fp32"))
        assert predicted.weights == sum(p.numel() * 4 for p in params)
        assert predicted.optimizer == measured_state_bytes(opt, params)[0], name


def test_flops_per_token_is_6n_plus_attention():
    f = fp.flops_per_token(LLAMA3, 4096)
    matmul = LLAMA3.param_count() - 128256 * 4096 - 32 * 2 * 4096 - 4096  # no lookup, norms
    assert f["matmul_6n"] == 6 * matmul
    # attention: 4 h d (s/2) forward per token per layer, x 3.5 forward + backward
    assert f["model"] - f["matmul_6n"] == pytest.approx(32 * 3.5 * 4 * 32 * 128 * 4096 / 2)
    assert fp.flops_per_token(LLAMA3, 4096, recomputed_layers=32)["hardware"] > f["model"]


def test_flops_agree_with_the_measured_benchmarks_count():
    """The per-token rule times the tokens equals train.traffic's count of a real model."""
    pytest.importorskip("torch")
    from llmbench.models.sizes import build
    from llmbench.train.traffic import step_flops

    model = build("mini", tie_embeddings=False)
    arch = Arch.from_size("mini", tie_embeddings=False)
    batch, seq = 2, 65
    per_token = fp.flops_per_token(arch, seq - 1)["model"]
    assert step_flops(model, batch, seq) == pytest.approx(per_token * batch * (seq - 1))


def test_fit_finds_the_largest_batch_and_seq():
    x = fp.Inputs(batch=1, seq=8192, precision="bf16-mixed", policy="every")
    memory = 80 * 2**30
    fit = fp.fit(LLAMA3, x, memory)
    assert fit["fits"] is False  # 16 B/param alone is 128 GB
    assert fit["max_batch"] is None and fit["max_seq"] is None
    sharded = fp.Inputs(**{**vars(x), "zero_stage": 3, "gpus": 8})
    fit = fp.fit(LLAMA3, sharded, memory)
    assert fit["fits"] is True
    b = fit["max_batch"]
    peak = lambda **c: fp.footprint(LLAMA3, fp.Inputs(**{**vars(sharded), **c}))["peak_bytes"]  # noqa: E731
    assert peak(batch=b) <= memory < peak(batch=b + 1)
    s = fit["max_seq"]
    assert peak(seq=s) <= memory < peak(seq=s + 1)


def test_checkpointing_trades_activations_for_flops():
    rows = {r["policy"]: r for r in fp.by_policy(LLAMA3, fp.Inputs(batch=1, seq=4096))}
    # after the forward, sqrt keeps ceil(sqrt(32)) segment inputs, every keeps 32
    assert rows["sqrt"]["activation_bytes"] < rows["every"]["activation_bytes"] \
        < rows["none"]["activation_bytes"] / 5
    assert rows["every"]["peak_bytes"] < rows["none"]["peak_bytes"]
    assert rows["none"]["hardware_flops_per_token"] < rows["every"]["hardware_flops_per_token"]
    assert rows["every"]["checkpointed_layers"] == 32


def test_largest_search():
    assert fp.largest(lambda n: n <= 37, 1, 1000) == 37
    assert fp.largest(lambda n: n <= 0, 1, 1000) is None
    assert fp.largest(lambda n: True, 1, 1000) == 1000
