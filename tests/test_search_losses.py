"""The fitness functions: the release's InfoNCE formula pinned by a hand-computed case, and the alternatives."""
from __future__ import annotations

import math

import pytest
import torch

from engine.search.losses import LOSSES, contrastive_loss, cosine_loss, get_loss, kl_loss, mse_loss


def test_contrastive_matches_hand_computed_3x3():
    # Rows already unit length except fp[2] = (1, 1, 0) -> (1, 1, 0)/sqrt(2).
    quant = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fp = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]])
    T = 3.0
    s = 1 / math.sqrt(2) / T
    # Similarity rows / T: [1/T, 0, s], [0, 1/T, s], [0, 0, 0]; cross-entropy against the diagonal.
    row0 = -math.log(math.exp(1 / T) / (math.exp(1 / T) + 1 + math.exp(s)))
    row2 = math.log(3)
    expected = (2 * row0 + row2) / 3 * 2 * T
    assert contrastive_loss(quant, fp, T).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_is_lowest_when_each_output_matches_its_own_reference():
    fp = torch.eye(4) * 5
    matched = contrastive_loss(fp.clone(), fp, 0.1)
    shuffled = contrastive_loss(fp[[1, 0, 3, 2]], fp, 0.1)
    noisy = contrastive_loss(fp + 0.5 * torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), fp, 0.1)
    assert matched < noisy < shuffled


def test_kl_uses_fp_softmax_as_target():
    quant = torch.tensor([[0.0, 0.0]])
    fp = torch.tensor([[math.log(3.0), 0.0]])          # p = (3/4, 1/4), q = (1/2, 1/2)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_loss(quant, fp, 1.0).item() == pytest.approx(expected, rel=1e-6)
    assert kl_loss(fp, fp, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    # Temperature softens both distributions and rescales by T².
    assert kl_loss(quant, fp * 2, 2.0).item() == pytest.approx(4 * expected, rel=1e-6)


def test_mse_and_cosine():
    quant = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    fp = torch.tensor([[1.0, 1.0], [0.0, 4.0]])
    assert mse_loss(quant, fp, 3.0).item() == pytest.approx((0 + 1 + 0 + 4) / 4)
    assert cosine_loss(quant, fp, 3.0).item() == pytest.approx((1 - 1 / math.sqrt(2) + 0) / 2, rel=1e-6)


def test_registry_by_name():
    assert set(LOSSES) == {"contrastive", "kl", "mse", "cosine"}
    assert get_loss("kl") is kl_loss
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("hinge")
