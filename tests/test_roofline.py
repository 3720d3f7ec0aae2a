"""The roofline: its arithmetic (core.roofline), the bytes attention and training steps must
move (kernels.problem.attention_bytes, train.traffic), real runs placed on a calibrated
device's ceilings, the table and the chart."""

import io
import json

import pytest

from llmbench.core import hardware
from llmbench.core.calibration import Calibration, calibration_key, save_calibration
from llmbench.core.profiles import select_profile
from llmbench.core.roofline import Ceilings, ceilings, place
from llmbench.kernels.problem import AttentionProblem, attention_bytes
from tests.conftest import run_cli

CEIL = Ceilings(peak_tflops=2.0, bandwidth_gbps=100.0, source="test")  # ridge: 20 FLOP/B


def test_ridge_and_the_two_sides_of_it():
    assert CEIL.ridge_intensity == pytest.approx(20.0)
    # 1 GFLOP over 100 MB: intensity 10, under the ridge: memory-bound at 10 x 100 GB/s
    memory = place(1e9, 1e8, 2e-3, CEIL)
    assert memory["arithmetic_intensity"] == pytest.approx(10.0)
    assert memory["bound"] == "memory"
    assert memory["roofline_tflops"] == pytest.approx(1.0)
    # the roofline allows 1e8 B / 1e11 B/s = 1 ms; it took 2 ms
    assert memory["roofline_pct"] == pytest.approx(50.0)
    compute = place(1e10, 1e8, 10e-3, CEIL)  # intensity 100: compute-bound at 2 TFLOP/s
    assert compute["bound"] == "compute"
    assert compute["roofline_tflops"] == pytest.approx(2.0)
    assert compute["roofline_pct"] == pytest.approx(50.0)  # 5 ms allowed, 10 ms taken
    # No counted FLOPs (an optimizer step): intensity 0, its share is the bandwidth it reached
    step = place(0.0, 4e8, 8e-3, CEIL)
    assert step["bound"] == "memory" and step["roofline_pct"] == pytest.approx(50.0)
    # A missing ceiling leaves the figures that need it out
    assert place(1e9, 1e8, 1e-3, Ceilings(2.0, None, "no bandwidth")) == {
        "arithmetic_intensity": pytest.approx(10.0)}


def _problem(**kw):
    base = dict(batch=2, heads=4, kv_heads=4, seq=16, head_dim=8, dtype="fp32", causal=False,
                mode="fwd", device="cpu")
    return AttentionProblem(**{**base, **kw})


def test_attention_bytes_by_hand():
    # q, k, v, o: 2 x 4 x 16 x 8 fp32 = 4096 B each; S = 2 x 4 x 16 x 16 x 4 = 8192 B;
    # lse 2 x 4 x 16 x 4 = 512 B; the causal mask 16 x 16 bools = 256 B
    t, s, lse, mask = 4096, 8192, 512, 256
    assert attention_bytes(_problem(), materializes=False) == 4 * t
    assert attention_bytes(_problem(), materializes=True) == 4 * t + 4 * s
    assert attention_bytes(_problem(causal=True), materializes=True) == 4 * t + 4 * s + mask
    fwd_bwd = _problem(mode="fwd+bwd")
    # forward Q K V O + lse; backward reads Q K V O dO lse, writes dQ dK dV
    assert attention_bytes(fwd_bwd, materializes=False) == (4 * t + lse) + (8 * t + lse)
    # forward as above; backward reads Q K V dO and P, dP, dS (7 matrices), writes dQ dK dV
    assert attention_bytes(fwd_bwd, materializes=True) == (4 * t + 4 * s) + (7 * t + 7 * s)
    # GQA: K and V are smaller, by the group
    assert attention_bytes(_problem(kv_heads=1), materializes=False) == 2 * t + 2 * t // 4


def test_step_flops_match_torchs_flop_counter():
    """The training step's FLOPs (train.traffic) against torch's FlopCounterMode, which counts
    every matrix multiply the step really runs: the projections and the head exactly. With
    the textbook attention it sees the full seq x seq products, forward and a backward twice
    as long (3 passes), where llmbench counts causal pairs as seq^2 / 2 and the backward as
    2.5x (the flash-attention convention of kernels.problem)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from llmbench.models.sizes import build
    from llmbench.train.loop import lm_loss
    from llmbench.train.traffic import step_flops

    torch.manual_seed(0)
    model = build("tiny", attention="standard", n_layers=2)
    batch, seq = 2, 32
    tokens = torch.randint(0, 256, (batch, seq))
    cfg = model.cfg
    pos = seq - 1  # the model reads seq - 1 positions; the last token is only a target
    full_core = 4 * batch * cfg.n_heads * cfg.head_size * pos * pos  # QK^T and PV, forward

    def counted(passes: int) -> tuple[float, float]:
        """(matrix-multiply FLOPs of the projections and head, of attention) of one step,
        the attention's full products scaled to the causal half."""
        with FlopCounterMode(display=False) as counter:
            lm_loss(model, tokens).backward()
        ops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
        assert ops["aten.bmm"] == pytest.approx(cfg.n_layers * passes * full_core, rel=1e-3)
        # the same products as llmbench counts them: causal half, backward 2.5x forward
        return ops["aten.mm"], ops["aten.bmm"] / passes * (passes + 0.5) / 2

    mm, core = counted(3)
    assert step_flops(model, batch, seq) == pytest.approx(mm + core, rel=1e-4)
    assert mm == 6 * sum(m.weight.numel() for m in model.modules()
                         if isinstance(m, torch.nn.Linear)) * batch * pos
    # checkpointing recomputes the segment's forward, but for its last down-projection
    model.set_checkpointing([(0, 2)])
    mm, core = counted(4)
    assert step_flops(model, batch, seq, recomputed_layers=2, segments=1) == pytest.approx(
        mm + core, rel=1e-4)


@pytest.fixture
def calibrated(tmp_path, monkeypatch):
    """A calibration of this machine saved in a fresh cache: ceilings low enough that the
    standard attention's small intensity is memory-bound."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMBENCH_CACHE", str(cache))
    hw = hardware.detect()
    key = calibration_key(hw, "cpu")
    cal = Calibration(device="cpu", device_name=key["device_name"], driver=None,
                      torch=key["torch"], llmbench="test", created_at="2026-11-30T00:00:00Z",
                      gemm_tflops={"fp32": 0.25}, gemm_shape={"fp32": "1024 x 1024 x 1024"},
                      copy_gbps=8.0, triad_gbps=10.0)
    save_calibration(cal, hw, "cpu")
    return hw, cache


def test_ceilings_prefer_the_calibration(calibrated, tmp_path, monkeypatch):
    hw, _ = calibrated
    profile = select_profile(hw, None, "cpu").profile
    ceil = ceilings(profile, hw, "cpu", "fp32")
    assert (ceil.peak_tflops, ceil.bandwidth_gbps) == (0.25, 10.0)
    assert ceil.calibrated_tflops == 0.25 and "measured" in ceil.source
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "empty"))
    theory = ceilings(profile, hw, "cpu", "fp32")
    assert theory.calibrated_tflops is None
    assert theory.peak_tflops == profile.peak_tflops("fp32", hw)
    assert theory.bandwidth_gbps is None and "llmbench peak --save" in theory.source


def test_attention_cases_on_the_roofline(calibrated, tmp_path):
    _, cache = calibrated
    out = tmp_path / "a.json"
    proc = run_cli("attention", "--seq", "512", "--impl", "standard,sdpa-flash,tiled",
                   "--max-time", "0.2", "--json", str(out), env={"LLMBENCH_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    cases = {c["params"]["impl"]: c["metrics"] for c in doc["cases"]}
    for m in cases.values():
        assert m["bound"] in ("compute", "memory")
        assert m["roofline_pct"] > 0 and m["arithmetic_intensity"] > 0
        assert m["attainable_utilization_pct"] == pytest.approx(
            100 * m["throughput_tflops"] / 0.25)
    # standard moves the seq x seq matrices: lower intensity than the fused kernel's
    assert cases["standard"]["arithmetic_intensity"] < cases["sdpa-flash"]["arithmetic_intensity"]
    assert cases["standard"]["bound"] == "memory"  # 7.5 FLOP/B, under the ridge at 25
    assert doc["summary"]["roofline"]["bandwidth_gbps"] == 10.0
    assert "roofline: where each case sits" in proc.stdout
    assert "% attainable" in proc.stdout

    from llmbench.core.results import load_document
    from llmbench.report.roofline import chart

    figures = chart(load_document(out))
    assert len(figures) == 1 and "roofline" in figures[0][0]
    import matplotlib.pyplot as plt

    pixels = plt.imread(io.BytesIO(figures[0][1]), format="png")
    assert pixels.shape[0] > 100


def test_the_tally_counts_what_the_step_formulas_count():
    """train.traffic.Tally counts each pass as it runs (the alignment loops' steps); on a plain
    training step it must agree with the step formulas, and a forward without autograd is a
    forward alone."""
    import torch

    from llmbench.kernels.problem import attended_pairs, pairs_flops
    from llmbench.models.sizes import build
    from llmbench.train.loop import train_step
    from llmbench.train.optimizers import measured_state_bytes
    from llmbench.train.traffic import Tally, step_bytes, step_flops

    torch.manual_seed(0)
    model = build("tiny", n_layers=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, seq = 2, 24
    tokens = torch.randint(0, 256, (batch, seq))
    train_step(model, optimizer, tokens)  # the optimizer's states exist from here on
    with Tally() as tally:
        train_step(model, optimizer, tokens)
    params = list(model.parameters())
    state = measured_state_bytes(optimizer, params)[0]
    assert tally.flops == pytest.approx(step_flops(model, batch, seq), rel=1e-12)
    # the norms' weights (read twice, their gradients written) are all the tally leaves out of
    # step_bytes' count without activations
    norms = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                if n.endswith("norm.weight"))
    assert tally.bytes == step_bytes(model, state, 0) - 3 * norms

    with torch.no_grad(), Tally() as forward:
        model(tokens)
    cfg = model.cfg
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    core = pairs_flops(attended_pairs(seq, causal=True), heads=cfg.n_heads,
                       head_dim=cfg.head_size, batch=batch)
    assert forward.flops == 2 * weights * batch * seq + cfg.n_layers * core
    linear_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                       if not n.endswith("norm.weight"))
    assert forward.bytes == linear_bytes


def test_the_tally_counts_a_recomputation_once():
    """A checkpointed segment's recomputation runs inside the backward: the tally counts it as
    one more forward, as step_flops does."""
    import torch

    from llmbench.models.sizes import build
    from llmbench.train.loop import train_step
    from llmbench.train.traffic import Tally, step_flops

    torch.manual_seed(0)
    model = build("tiny", n_layers=2)
    model.set_checkpointing([(0, 2)])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 256, (2, 16))
    with Tally() as tally:
        train_step(model, optimizer, tokens)
    # what ran again: both layers but the segment's last down-projection (torch's early stop)
    assert tally.flops == pytest.approx(
        step_flops(model, 2, 16, recomputed_layers=2, segments=1), rel=1e-12)
