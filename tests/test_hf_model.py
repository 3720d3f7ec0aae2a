"""models.hf_model: a transformers model trained by llmbench's loops, its checkpointing
(transformers' own per layer, llmbench's for multi-layer segments), and the training
benchmarks' --hf-config / --layers / --param-dtype / --attention, on small real configs."""

import json

import pytest
import torch
import torch.nn.functional as F

from llmbench.benches.amp import AmpBenchmark, AmpConfig
from llmbench.benches.checkpoint import CheckpointBenchmark, CheckpointConfig
from llmbench.benches.optim import OptimBenchmark, OptimConfig
from llmbench.benches.training import TrainingConfig
from llmbench.core.memory import HeldMemory
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.models.hf import load_config
from llmbench.models.hf_model import build_causal_lm
from llmbench.train.traffic import step_flops

pytest.importorskip("transformers")

INLINE = RunOptions(isolate=False)
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
         "max_position_embeddings": 512}


@pytest.fixture
def small_config(tmp_path):
    def write(model_type="llama", **extra):
        path = tmp_path / f"{model_type}.json"
        path.write_text(json.dumps({"model_type": model_type, **SMALL, **extra}))
        return str(path)
    return write


def _loss_and_grads(model, tokens):
    model.zero_grad(set_to_none=True)
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "falcon"])
def test_every_policy_gives_the_same_gradients(small_config, model_type):
    extra = {"new_decoder_architecture": True, "num_kv_heads": 2} if model_type == "falcon" \
        else {}
    cfg = load_config(small_config(model_type, **extra))
    torch.manual_seed(0)
    model = build_causal_lm(cfg).train()
    tokens = torch.randint(0, 256, (2, 17))
    loss, grads = _loss_and_grads(model, tokens)
    for segs in ([(0, 1), (1, 2), (2, 3), (3, 4)], [(0, 2), (2, 4)], [(1, 4)], [(0, 1), (2, 4)]):
        model.set_checkpointing(segs)
        again, checked = _loss_and_grads(model, tokens)
        assert torch.equal(loss, again), segs
        for a, b in zip(grads, checked, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    model.set_checkpointing([])
    assert model.checkpoint_segments == []


def test_per_layer_segments_use_transformers_own_checkpointing(small_config):
    model = build_causal_lm(load_config(small_config())).train()
    model.set_checkpointing([(0, 1), (2, 3)])
    assert [layer.gradient_checkpointing for layer in model.layers] == [True, False, True, False]
    model.set_checkpointing([(0, 2)])  # a multi-layer segment: llmbench's own checkpoint call
    assert not any(layer.gradient_checkpointing for layer in model.layers)
    assert "forward" in vars(model.layers[0]) and "forward" in vars(model.layers[1])
    model.set_checkpointing([])
    assert not any("forward" in vars(layer) for layer in model.layers)
    with pytest.raises(ValueError, match="disjoint"):
        model.set_checkpointing([(0, 2), (1, 3)])


def test_checkpointing_keeps_less_for_the_backward(small_config):
    """What the forward keeps (HeldMemory, as the benchmarks read it) falls with each policy."""
    cfg = load_config(small_config(hidden_size=256, intermediate_size=1024,
                                   num_attention_heads=8, num_key_value_heads=8))
    torch.manual_seed(0)
    model = build_causal_lm(cfg).train()
    tokens = torch.randint(0, 256, (8, 257))

    def held(segs):
        model.set_checkpointing(segs)
        memory = HeldMemory("cpu")
        memory.start()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        kept = memory.read()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return kept

    held([])  # warm-up
    none, every, sqrt = held([]), held([(i, i + 1) for i in range(4)]), held([(0, 2), (2, 4)])
    assert every < 0.6 * none and sqrt < 0.6 * none


def test_flops_count_the_transformers_layers(small_config):
    """train.traffic reads an HF model as it reads the built-in one: the same widths give the
    same matrix-multiply FLOPs (llama's layout is the built-in model's, untied head)."""
    from llmbench.models.sizes import build

    hf = build_causal_lm(load_config(small_config(num_key_value_heads=4))).train()
    own = build("tiny", dim=64, n_heads=4, n_layers=4, hidden_dim=128, tie_embeddings=False)
    assert step_flops(hf, 2, 17) == step_flops(own, 2, 17)
    assert step_flops(hf, 2, 17, recomputed_layers=4, segments=4) == \
        step_flops(own, 2, 17, recomputed_layers=4, segments=4)


def test_checkpoint_bench_trains_an_hf_config(hw, fast_timing, small_config):
    cfg = CheckpointConfig(hf_config=small_config(), layers=[2], batch=2, seq=33,
                           device="cpu", timing=fast_timing, policies=["none", "every", "sqrt"])
    doc = run_benchmark(CheckpointBenchmark(), cfg, options=INLINE, hw=hw)
    assert [c.status for c in doc.cases] == ["ok"] * 3, [c.reason for c in doc.cases]
    case = doc.cases[0]
    assert case.params["hf_config"].endswith("llama.json") and case.params["layers"] == 2
    assert case.params["param_dtype"] == "fp32" and case.params["model"] == "llama"
    assert case.metrics["flops_per_step"] > 0


def test_optim_bench_counts_the_hf_parameters(hw, fast_timing, small_config):
    path = small_config("qwen2", torch_dtype="bfloat16")
    cfg = OptimConfig(hf_config=path, layers=2, batch=2, seq=17, device="cpu",
                      timing=fast_timing, optimizers=["adamw"])
    doc = run_benchmark(OptimBenchmark(), cfg, options=INLINE, hw=hw)
    (case,) = doc.cases
    assert case.status == "ok", case.reason
    n = load_config(path, layers=2).param_count()
    assert case.metrics["params"] == n == doc.summary["params"]
    # auto: the config's bfloat16; AdamW's two states in bf16 plus a 4-byte step per tensor
    assert case.params["precision"] == "bf16"
    assert case.metrics["weights_bytes"] == 2 * n
    assert case.metrics["state_matches_analytic"] is True


def test_amp_trains_hf_weights_in_fp32(hw, fast_timing, small_config):
    cfg = AmpConfig(hf_config=small_config(torch_dtype="bfloat16"), layers=1, steps=5,
                    batch=2, seq=17, device="cpu", variants=["fp32", "bf16"],
                    timing=fast_timing)
    doc = run_benchmark(AmpBenchmark(), cfg, options=INLINE, hw=hw)
    assert [c.status for c in doc.cases] == ["ok", "ok"], [c.reason for c in doc.cases]
    # amp compares autocast over fp32 weights, whatever dtype the document publishes
    assert all(c.params.get("param_dtype", "fp32") == "fp32" for c in doc.cases)
    assert doc.cases[0].params["model"] == "llama" and doc.cases[0].params["layers"] == 1


def test_bad_hf_input_is_one_line(small_config, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'llama-9'"):
        TrainingConfig(hf_config="llama-9")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        TrainingConfig(hf_config=str(bad))
    with pytest.raises(ValueError, match="--hf-config llama-3-8b"):
        TrainingConfig(model="llama-3-8b")


def test_align_trains_an_hf_config(hw, small_config, tmp_path, monkeypatch):
    """DPO (policy and reference) and PPO (sampling with transformers' cache, value and
    reward heads on the features) on a transformers model; its attention counted for the
    roofline as the built-in model's is."""
    from llmbench.benches.align import AlignBenchmark, AlignConfig

    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "cache"))
    path = small_config()
    small = dict(hf_config=path, layers=2, sft_steps=5, steps=3, train_pairs=64,
                 heldout_pairs=16, eval_samples=8, device="cpu")
    for method in ("dpo", "ppo"):
        doc = run_benchmark(AlignBenchmark(), AlignConfig(method=method, **small),
                            options=INLINE, hw=hw)
        (case,) = doc.cases
        assert case.status == "ok", case.reason
        assert case.params["hf_config"] == str(__import__("pathlib").Path(path).resolve())
        assert case.params["model"] == "llama" and case.params["layers"] == 2
        assert case.metrics["flops_per_step"] > 0
    # the reference came from the cache the second time: keyed by the document and depth
    assert case.metrics["history/reference_from_cache"] == [1.0]
