import pytest

from llmbench.train import zero


def test_the_papers_figure_1_numbers():
    """ZeRO (Rajbhandari et al., 2020), Figure 1: 7.5B parameters, 64 ranks, K = 12."""
    psi, n = 7.5e9, 64
    got = [zero.per_rank_bytes(psi, n, stage, "mixed") / 1e9 for stage in zero.STAGES]
    assert got == pytest.approx([120.0, 31.4, 16.6, 1.9], abs=0.05)


def test_one_rank_shards_nothing_and_stage_3_divides_everything():
    for scheme in zero.SCHEMES:
        whole = zero.per_rank_bytes(1000, 1, 0, scheme)
        assert [zero.per_rank_bytes(1000, 1, s, scheme) for s in zero.STAGES] == [whole] * 4
        assert zero.per_rank_bytes(1000, 8, 3, scheme) == pytest.approx(whole / 8)
    assert zero.per_rank_bytes(1, 1, 0, "fp32") == 16  # 4 + 4 + Adam's 2 x 4


def test_bad_stage_or_world():
    with pytest.raises(ValueError, match="stage"):
        zero.per_rank_bytes(10, 2, 4, "mixed")
    with pytest.raises(ValueError, match="world size"):
        zero.per_rank_bytes(10, 0, 1, "mixed")
