"""oneformer.engine.build_optimizer: the original per-parameter groups, AdamW/SGD, and gradient clipping that clips
("full_model", "value", "norm") or only cleans NaN/Inf ("nan_to_num", the original's effective behaviour)."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn

from oneformer import add_oneformer_config_all
from oneformer.engine import add_oneformer_engine_config, build_optimizer
from tests.tiny import tiny_cfg


def _solver_cfg(**clip):
    cfg = add_oneformer_engine_config(add_oneformer_config_all(get_cfg()))
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip.pop("enabled", True)
    for key, value in clip.items():
        cfg.SOLVER.CLIP_GRADIENTS[key.upper()] = value
    return cfg


@pytest.fixture(scope="module")
def tiny_model_and_optimizer():
    cfg = tiny_cfg(is_train=True)
    add_oneformer_engine_config(cfg)
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    torch.manual_seed(0)
    model = build_model(cfg)
    return model, build_optimizer(cfg, model)


def _hyper(optimizer):
    """parameter -> (lr, weight_decay), asserting one parameter per group."""
    out = {}
    for g in optimizer.param_groups:
        assert len(g["params"]) == 1
        out[g["params"][0]] = (g["lr"], g["weight_decay"])
    return out


def test_param_groups_follow_the_original_rules(tiny_model_and_optimizer):
    model, opt = tiny_model_and_optimizer
    hyper = _hyper(opt)
    named = dict(model.named_parameters())
    assert len(hyper) == sum(p.requires_grad for p in model.parameters())  # one group per trainable parameter

    def lr_wd(name):
        return hyper[named[name]]

    # backbone: lr x 0.1 (weights keep the decay, norms and Swin's relative position bias tables get none)
    backbone = [n for n in named if n.startswith("backbone.")]
    assert backbone and all(math.isclose(lr_wd(n)[0], 1e-5) for n in backbone)
    assert all(math.isclose(lr_wd(n)[0], 1e-4) for n in named if not n.startswith("backbone."))
    assert lr_wd("backbone.patch_embed.proj.weight") == pytest.approx((1e-5, 0.05))
    rpb = [n for n in named if n.endswith("relative_position_bias_table")]
    assert rpb and all(lr_wd(n)[1] == 0.0 for n in rpb)
    # every torch norm layer's parameters: WEIGHT_DECAY_NORM (0)
    norms = [f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, (nn.LayerNorm, nn.GroupNorm))
             for p, _ in mod.named_parameters(recurse=False)]
    assert norms and all(lr_wd(n)[1] == 0.0 for n in norms)
    # nn.Embedding: WEIGHT_DECAY_EMBED (0): decoder query/level embeddings, text token embedding, prompt context
    for name in ("sem_seg_head.predictor.query_embed.weight", "sem_seg_head.predictor.level_embed.weight",
                 "text_encoder.token_embedding.weight", "prompt_ctx.weight"):
        assert lr_wd(name) == (1e-4, 0.0), name
    # plain nn.Parameters keep the default decay (as in the original)
    for name in ("criterion.logit_scale", "text_encoder.positional_embedding",
                 "sem_seg_head.pixel_decoder.transformer.level_embed"):
        assert lr_wd(name) == (1e-4, 0.05), name
    assert lr_wd("task_mlp.layers.0.weight") == (1e-4, 0.05)


def test_adamw_hyperparameters_and_sgd(tiny_model_and_optimizer):
    _, opt = tiny_model_and_optimizer
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8 and opt.defaults["lr"] == 1e-4
    cfg = _solver_cfg(enabled=False)
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.MOMENTUM = 0.9
    opt = build_optimizer(cfg, nn.Linear(3, 2))
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="ADAMW.*SGD"):
        build_optimizer(cfg, nn.Linear(3, 2))


def _model_with_grads(*grads):
    """A module whose parameters hold the given gradients."""
    model = nn.Module()
    model.params = nn.ParameterList([nn.Parameter(torch.zeros_like(g)) for g in grads])
    for p, g in zip(model.params, grads):
        p.grad = g.clone()
    return model


def _grads(model):
    return [p.grad for p in model.params]


def _total_norm(model):
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in _grads(model)])).item()


HUGE = (torch.full((4, 3), 1e4), torch.tensor([-3e5, 2.0]))


def test_full_model_clipping_clips_the_global_norm():
    model = _model_with_grads(*HUGE)
    opt = build_optimizer(_solver_cfg(clip_type="full_model", clip_value=0.01, norm_type=2.0), model)
    before = [g.clone() for g in _grads(model)]
    opt.step()
    assert _total_norm(model) <= 0.01 * (1 + 1e-4)
    assert _total_norm(model) == pytest.approx(0.01, rel=1e-3)
    # one common factor for all parameters (global norm, not per parameter)
    ratios = torch.cat([(g / b).flatten() for g, b in zip(_grads(model), before)])
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))


def test_full_model_clipping_cleans_nan_and_inf_first():
    model = _model_with_grads(torch.tensor([float("nan"), float("inf"), 1.0]), torch.tensor([-float("inf")]))
    opt = build_optimizer(_solver_cfg(clip_type="full_model", clip_value=0.01), model)
    opt.step()
    assert all(torch.isfinite(g).all() for g in _grads(model))
    assert _total_norm(model) == pytest.approx(0.01, rel=1e-3)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_value_clipping_clips_every_element():
    model = _model_with_grads(*HUGE)
    opt = build_optimizer(_solver_cfg(clip_type="value", clip_value=0.5), model)
    opt.step()
    grads = torch.cat([g.flatten() for g in _grads(model)])
    assert grads.abs().max().item() <= 0.5
    assert sorted(grads.unique().tolist()) == [-0.5, 0.5]


def test_norm_clipping_clips_each_parameter():
    model = _model_with_grads(*HUGE)
    opt = build_optimizer(_solver_cfg(clip_type="norm", clip_value=1.0), model)
    opt.step()
    assert all(torch.linalg.vector_norm(g).item() <= 1.0 + 1e-4 for g in _grads(model))


def test_nan_to_num_reproduces_the_original_no_clipping():
    """CLIP_TYPE nan_to_num: NaN -> 0 and +-Inf -> +-1e5, finite gradients untouched however large."""
    grads = (torch.tensor([float("nan"), float("inf"), -float("inf"), 7e6]), torch.full((2, 2), 1e4))
    model = _model_with_grads(*grads)
    opt = build_optimizer(_solver_cfg(clip_type="nan_to_num", clip_value=0.01), model)
    opt.step()
    g0, g1 = _grads(model)
    assert g0.tolist() == [0.0, 1e5, -1e5, 7e6]
    assert torch.equal(g1, grads[1])
    assert _total_norm(model) > 1e6  # not clipped to CLIP_VALUE
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_clipping_disabled_or_unknown():
    model = _model_with_grads(*HUGE)
    opt = build_optimizer(_solver_cfg(enabled=False, clip_type="full_model", clip_value=0.01), model)
    opt.step()
    assert torch.equal(_grads(model)[0], HUGE[0])
    with pytest.raises(ValueError, match="nan_to_num"):
        build_optimizer(_solver_cfg(clip_type="global"), model)
