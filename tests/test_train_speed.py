"""The training fast paths give the plain path's loss and gradients (issue #19)."""

import pytest
import torch
import torch.nn.functional as F

import ttlib.model as model_module
from ttlib.model import GPTConfig, TrajectoryGPT, causal_attention_in_halves
from ttlib.train import TrainConfig, autocast


def _model_and_batch(dtype=torch.float64, B=3, **kw):
    torch.manual_seed(0)
    cfg = GPTConfig(observation_dim=3, action_dim=2, n_bins=10, n_transitions=10, dropout=0.0, **kw)
    model = TrajectoryGPT(cfg).to(dtype).train()
    with torch.no_grad():  # non-zero position embeddings, so attention depends on position
        model.pos_emb.normal_(0, 0.1)
    g = torch.Generator().manual_seed(1)
    T = cfg.block_size
    x = torch.randint(0, cfg.n_bins + 1, (B, T), generator=g)
    y = torch.randint(0, cfg.n_bins + 1, (B, T), generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.2).to(dtype)
    return model, x, y, mask


def _loss_and_grads(model, x, y, mask):
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y, mask)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_attention_in_halves_equals_one_call():
    model, *_ = _model_and_batch()
    T = model.config.block_size
    allowed = model.attention_mask(0, T)
    q, k, v = (torch.randn(2, 4, T, 8, dtype=torch.float64) for _ in range(3))
    one = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    halves = causal_attention_in_halves(q, k, v, allowed)
    torch.testing.assert_close(halves, one, rtol=0, atol=1e-12)


def test_model_loss_and_gradients_with_halves_equal_one_call(monkeypatch):
    """The whole training step (fp64) with and without the split: equal within 1e-10."""
    model, x, y, mask = _model_and_batch()
    assert model.config.block_size >= 2 * model_module.MIN_QUERY_SPLIT  # the split is taken
    loss, grads = _loss_and_grads(model, x, y, mask)
    monkeypatch.setattr(model_module, "MIN_QUERY_SPLIT", 10**6)  # one SDPA call
    plain_loss, plain_grads = _loss_and_grads(model, x, y, mask)
    assert abs(loss.item() - plain_loss.item()) < 1e-10
    for name, g in grads.items():
        torch.testing.assert_close(g, plain_grads[name], rtol=0, atol=1e-10, msg=name)


def test_bf16_autocast_step_is_close_to_fp32():
    """bf16 changes numerics: the loss within 1 % and every gradient within 5 % (relative
    norm of the difference) of fp32 on the same weights and batch; and it really is bf16."""
    model, x, y, mask = _model_and_batch(dtype=torch.float32, n_layer=2, n_embd=64)
    loss, grads = _loss_and_grads(model, x, y, mask)
    model.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), "bf16"):
        logits, bf_loss = model(x, y, mask)
    assert logits.dtype == torch.bfloat16  # autocast is on (else this test proves nothing)
    bf_loss.backward()
    assert abs(bf_loss.item() - loss.item()) < 0.01 * loss.item()
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32  # weights and gradients stay fp32
        rel = (p.grad - grads[name]).norm() / grads[name].norm().clamp_min(1e-12)
        assert rel < 0.05, (name, rel.item())


def test_fp32_is_the_default_and_unknown_precisions_are_refused():
    assert TrainConfig().precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


def test_checkpoints_written_before_precision_existed_resume_as_fp32(tmp_path):
    from test_train import SMALL, small_dataset

    from ttlib.io import load_torch, save_torch
    from ttlib.train import gpt_config_for, train

    ds = small_dataset()
    cfg = TrainConfig(max_steps=4, batch_size=8, checkpoint_every=2, log_every=2)
    train(ds, gpt_config_for(ds, **SMALL), cfg, tmp_path, progress=False, stop_at_step=2)
    path = tmp_path / "checkpoint.pt"
    ckpt = load_torch(path)
    del ckpt["train_config"]["precision"]  # as written by the versions before it
    save_torch(ckpt, path)
    assert train(ds, gpt_config_for(ds, **SMALL), cfg, tmp_path, progress=False).steps_run == 2
