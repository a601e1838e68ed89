"""PPO's tensor maths against hand-computed values: token rewards, masked GAE, whitening, value-loss clipping."""

import pytest
import torch

from trl_ext.trainer.gae import explained_variance, kl_estimate, masked_gae, masked_whiten, token_rewards
from trl_ext.trainer.value_head import clipped_value_loss


def test_gae_matches_hand_computed_example():
    # gamma=0.9, lam=0.8, one sequence of 3 tokens rewarded 1 on its last token:
    #   t=2: delta = 1 + 0.9*0   - 0.7 = 0.3                   A2 = 0.3
    #   t=1: delta = 0 + 0.9*0.7 - 0.6 = 0.03    A1 = 0.03 + 0.72*0.3   = 0.246
    #   t=0: delta = 0 + 0.9*0.6 - 0.5 = 0.04    A0 = 0.04 + 0.72*0.246 = 0.21712
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, returns = masked_gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages, torch.tensor([[0.21712, 0.246, 0.3]]))
    torch.testing.assert_close(returns, torch.tensor([[0.71712, 0.846, 1.0]]))


def test_gae_ends_each_row_at_its_last_valid_token():
    rewards = torch.tensor([[0.0, 1.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 9.0, 9.0]])  # padding carries garbage values and rewards
    advantages, returns = masked_gae(rewards, values, torch.tensor([[1, 1, 0, 0]]), gamma=1.0, lam=1.0)
    # gamma = lam = 1: Monte-Carlo, A_t = (sum of rewards from t on) - V_t; the episode ends at token 1
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 0.4, 0.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))


def test_gae_steps_over_masked_tokens_inside_a_completion():
    # Token 1 is tool output: it neither earns nor bootstraps, token 0 bootstraps from token 2
    rewards = torch.tensor([[0.0, 7.0, 1.0]])
    values = torch.tensor([[0.2, 9.0, 0.5]])
    advantages, _ = masked_gae(rewards, values, torch.tensor([[1, 0, 1]]), gamma=0.9, lam=0.5)
    a2 = 1.0 - 0.5
    a0 = (0.0 + 0.9 * 0.5 - 0.2) + 0.9 * 0.5 * a2
    torch.testing.assert_close(advantages, torch.tensor([[a0, 0.0, a2]]))


def test_token_rewards_put_the_score_on_the_last_valid_token_and_kl_on_every_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    rewards = token_rewards(torch.tensor([1.0, -1.0, 3.0]), kl, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.01, -0.02 + 1.0, 0.0], [-0.05, -0.05, -0.05 - 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, expected)


def test_kl_estimators():
    logps, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    torch.testing.assert_close(kl_estimate(logps, ref, "k1"), torch.tensor([0.5, -1.0]))
    k3 = kl_estimate(logps, ref, "k3")  # exp(-r) + r - 1 with r = logps - ref
    torch.testing.assert_close(k3, torch.exp(-torch.tensor([0.5, -1.0])) + torch.tensor([0.5, -1.0]) - 1)
    assert (k3 >= 0).all()
    with pytest.raises(ValueError, match="k2"):
        kl_estimate(logps, ref, "k2")


def test_whitening_uses_valid_tokens_of_the_global_batch():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    white = masked_whiten(x, mask)
    valid = white[mask.bool()]
    assert white[0, 2] == 0
    torch.testing.assert_close(valid.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(valid.var(), torch.tensor(1.0), atol=1e-5, rtol=0)
    # Two processes holding copies of this batch: the statistics are those of both (same mean, variance ~ n/(n-1))
    doubled = masked_whiten(x, mask, reduce=lambda t: 2 * t)
    torch.testing.assert_close(doubled[mask.bool()].mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert doubled[0, 0] < white[0, 0] < 0  # larger n: smaller unbiased variance correction, wider spread


def test_explained_variance():
    returns = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    mask = torch.ones_like(returns)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 0.5), returns, mask) == pytest.approx(0.0)
    assert explained_variance(1 - returns, returns, mask) < 0


def test_value_loss_clipping():
    old = torch.tensor([0.0, 0.0, 0.0])
    values = torch.tensor([0.5, 0.5, 0.1], requires_grad=True)
    returns = torch.tensor([1.0, 0.0, 1.0])
    loss, clipped = clipped_value_loss(values, old, returns, clip_range=0.2)
    # 0: moved 0.5 toward R=1: the clipped value 0.2 has the larger error 0.64 -> 0.32, and no gradient
    # 1: moved 0.5 away from R=0: the unclipped error 0.25 is larger -> 0.125
    # 2: inside the clip range: both terms equal (0.9^2) -> 0.405
    torch.testing.assert_close(loss.detach(), torch.tensor([0.32, 0.125, 0.405]))
    assert clipped.tolist() == [True, False, False]
    loss.sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([0.0, 0.5, -0.9]))
