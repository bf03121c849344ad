"""What training reports and how it regularises: the per-kind losses behind every loss figure,
and which parameters the optimiser decays."""

import math

import pytest
import torch
import torch.nn as nn

from ttlib.model import GPTConfig
from ttlib.train import loss_by_kind

from conftest import tiny_gpt

# 2 state dims, 1 action dim: a transition is [s0, s1, a, r, V] (5 tokens), 10 bins + stop.
CFG = GPTConfig(observation_dim=2, action_dim=1, n_bins=10, n_transitions=2)
# the input at position t predicts the target at t + 1: s1, a, r, V, s0, s1, a, r, V
KINDS = ["state", "action", "reward", "value", "state", "state", "action", "reward", "value"]


def test_loss_by_kind_averages_the_cross_entropy_of_each_kind_of_target():
    targets = torch.arange(9)[None] % 10
    logits = torch.zeros(1, 9, 11)  # uniform: cross-entropy ln 11 ...
    for t, kind in enumerate(KINDS):
        if kind == "value":  # ... except at the value targets, predicted for certain
            logits[0, t, targets[0, t]] = 100.0
    out = loss_by_kind(logits, targets, torch.ones(1, 9), CFG)
    assert out["loss_value"] == pytest.approx(0.0, abs=1e-6)
    for kind in ("state", "action", "reward"):
        assert out[f"loss_{kind}"] == pytest.approx(math.log(11))


def test_loss_by_kind_leaves_out_masked_targets():
    targets = torch.zeros(1, 9, dtype=torch.long)
    logits = torch.zeros(1, 9, 11)
    logits[0, 4, 0] = 100.0  # the first s0 target is certain, the other states are not
    mask = torch.ones(1, 9)
    mask[0, [0, 3, 8]] = 0.0  # the first state target and every value target are padding
    out = loss_by_kind(logits, targets, mask, CFG)
    assert math.isnan(out["loss_value"])
    assert out["loss_state"] == pytest.approx(math.log(11) / 2, rel=1e-4)  # targets 4 and 5


def test_weight_decay_applies_to_linear_weights_and_the_heads_only():
    model = tiny_gpt(goal_dim=2)
    decay, no_decay = model.configure_optimizer(lr=1e-3, weight_decay=0.1).param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in decay["params"]} == matrices | {id(model.head)}
    rest = {id(p) for p in model.parameters()} - matrices - {id(model.head)}
    assert {id(p) for p in no_decay["params"]} == rest  # biases, layer norms, embeddings
    assert id(model.tok_emb.weight) in rest and id(model.goal_emb.weight) in rest
