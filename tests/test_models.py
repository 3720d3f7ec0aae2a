import importlib.util

import pytest
import torch

from llmbench.core.errors import UsageError
from llmbench.models import KVCache, ModelConfig, Transformer, build, model_config
from llmbench.models.transformer import apply_rope, rope_tables


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=64, dim=64, n_layers=3, n_heads=8, max_seq_len=64)
    return Transformer(ModelConfig(**{**cfg, **kw})).double().eval()


# Every implementation the model can run on this CPU; triton through Triton's interpreter
# (conftest), which computes in fp32 only.
DECODERS = ["sdpa", "sdpa-math", "standard", "tiled", "triton"]


def decoder(attention, kv_heads, **kw):
    if attention == "triton":
        if importlib.util.find_spec("triton") is None:
            pytest.skip("triton is not installed")
        # Fewer layers: the interpreter runs each launch in numpy.
        return tiny(n_kv_heads=kv_heads, attention=attention, n_layers=1, **kw).float()
    return tiny(n_kv_heads=kv_heads, attention=attention, **kw)


def tolerance(attention):
    # tiled accumulates in fp32 by design, triton runs in fp32; the others compute in fp64.
    return {"tiled": 1e-6, "triton": 1e-5}.get(attention, 1e-10)


@pytest.mark.parametrize("kv_heads", [8, 2, 1], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("attention", DECODERS)
def test_cached_decoding_equals_full_forward(kv_heads, attention):
    model = decoder(attention, kv_heads)
    tokens = torch.randint(0, 64, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(batch=2, max_seq=21)
        prefill = model(tokens[:, :9], cache=cache, start=0)
        steps = [model(tokens[:, t:t + 1], cache=cache, start=t) for t in range(9, 21)]
    decoded = torch.cat([prefill, *steps], dim=1)
    assert decoded.shape == full.shape
    assert (decoded - full).abs().max().item() < tolerance(attention)
    assert cache.length == 21


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["MHA", "GQA"])
@pytest.mark.parametrize("attention", DECODERS)
def test_chunked_prefill_after_cache_equals_full_forward(kv_heads, attention):
    model = decoder(attention, kv_heads, n_heads=4)
    tokens = torch.randint(0, 64, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(batch=1, max_seq=30)
        # chunks shorter and longer than what is cached, and a single token
        parts = [model(tokens[:, a:b], cache=cache, start=a)
                 for a, b in [(0, 7), (7, 19), (19, 20), (20, 30)]]
    assert (torch.cat(parts, dim=1) - full).abs().max().item() < tolerance(attention)


@pytest.mark.parametrize("attention", ["standard", "sdpa-math", "tiled"])
def test_decoding_runs_the_configured_implementation_causal(attention):
    """`kvcache --impl X` measures X: prefill, a chunk after the cache and one-token steps all
    call the configured implementation, with its (bottom-right) causal mask."""
    model = tiny(n_kv_heads=2, attention=attention, n_layers=1)
    attn = model.layers[0].attn
    calls = []
    fn = attn.fn

    def spy(q, k, v, *, causal, **kw):
        calls.append((q.shape[2], k.shape[2], causal))
        return fn(q, k, v, causal=causal, **kw)

    attn.fn = spy
    tokens = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cache = model.new_cache(batch=1, max_seq=12)
        model(tokens[:, :5], cache=cache, start=0)
        model(tokens[:, 5:10], cache=cache, start=5)
        model(tokens[:, 10:11], cache=cache, start=10)
    assert calls == [(5, 5, True), (5, 10, True), (1, 11, True)]


def test_cache_bytes_equal_the_formula():
    model = tiny(n_kv_heads=2).float()
    cache = model.new_cache(batch=3, max_seq=40, dtype=torch.float16)
    assert cache.nbytes == KVCache.analytic_bytes(layers=3, kv_heads=2, head_dim=8, seq=40,
                                                  batch=3, bytes_per_element=2)
    with pytest.raises(ValueError, match="holds 40 positions"):
        cache.update(0, torch.zeros(3, 2, 2, 8), torch.zeros(3, 2, 2, 8), 39)


def test_rope_rotates_pairs_and_keeps_norms():
    cos, sin = rope_tables(16, 8, 10000.0)
    x = torch.randn(1, 16, 2, 8, dtype=torch.float64)
    y = apply_rope(x, cos.double(), sin.double())
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(y[:, 0], x[:, 0])  # position 0: angle 0
    # Relative positions: <R_m q, R_n k> depends on m - n only.
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    rq = apply_rope(q.expand(1, 16, 1, 8), cos.double(), sin.double())[0, :, 0]
    rk = apply_rope(k.expand(1, 16, 1, 8), cos.double(), sin.double())[0, :, 0]
    assert torch.isclose(rq[5] @ rk[3], rq[12] @ rk[10])


def test_weight_tying_and_parameter_count():
    m = build("tiny")
    assert m.output.weight is m.tok_embeddings.weight
    c = m.cfg
    per_layer = (c.dim * c.n_heads * c.head_size * 2 + c.dim * c.kv_heads * c.head_size * 2
                 + 3 * c.dim * c.ffn_dim + 2 * c.dim)
    expected = c.vocab_size * c.dim + c.n_layers * per_layer + c.dim
    assert m.num_parameters() == expected
    untied = Transformer(c.model_copy(update={"tie_embeddings": False}))
    assert untied.num_parameters() == expected + c.vocab_size * c.dim


def test_named_sizes_span_1m_to_100m():
    counts = {s: build(s).num_parameters() for s in ("tiny", "small")}
    assert 0.5e6 < counts["tiny"] < 1.5e6
    assert 80e6 < counts["small"] < 120e6
    with pytest.raises(UsageError, match="unknown model size"):
        model_config("huge")


def test_flops_per_token_palm_formula():
    m = build("tiny")
    c = m.cfg
    n = m.num_parameters()
    assert m.flops_per_token(256) == 6 * n + 12 * c.n_layers * c.n_heads * c.head_size * 256
    assert m.flops_per_token(256, training=False) == m.flops_per_token(256) / 3


def test_config_rejects_bad_heads_and_attention():
    with pytest.raises(ValueError, match="n_kv_heads 3 does not divide n_heads 8"):
        ModelConfig(n_heads=8, n_kv_heads=3)
    with pytest.raises(ValueError, match="unknown attention"):
        ModelConfig(attention="magic")


def test_checkpointing_gives_identical_gradients():
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))

    def grads(segments):
        model = tiny(n_kv_heads=4).float().train()
        model.set_checkpointing(segments)
        loss = model(tokens).logsumexp(-1).mean()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    ref = grads([])
    for segments in ([(0, 1), (1, 2), (2, 3)], [(0, 3)], [(1, 2)]):
        for g, r in zip(grads(segments), ref, strict=True):
            assert torch.equal(g, r)
    with pytest.raises(ValueError, match="disjoint"):
        tiny().set_checkpointing([(0, 2), (1, 3)])


def test_flex_attention_in_the_model_matches_sdpa_and_training_says_where_it_cannot():
    """The built-in model with FlexAttention (compiled, causal block mask): its forward equals
    SDPA's; training it needs FlexAttention's backward, which torch 2.13 lacks on a CPU: the
    case is unavailable with torch's own reason, not a crash."""
    from llmbench.core.errors import CaseUnavailable
    from llmbench.kernels.flex import backward_refusal
    from llmbench.train.loop import build_model

    torch.manual_seed(0)
    sdpa = build("tiny", n_layers=2, attention="sdpa").eval()
    flex = build("tiny", n_layers=2, attention="flex").eval()
    flex.load_state_dict(sdpa.state_dict())
    tokens = torch.randint(0, sdpa.cfg.vocab_size, (2, 40))
    with torch.no_grad():
        assert (flex(tokens) - sdpa(tokens)).abs().max().item() < 1e-4
    if backward_refusal("cpu") is not None:
        with pytest.raises(CaseUnavailable, match="FlexAttention does not support backward"):
            build_model("tiny", seed=0, device="cpu", attention="flex")
