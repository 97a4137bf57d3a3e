"""The task-conditioned masked-attention decoder: query initialization wiring, train/eval agreement, masks."""
import pytest
import torch

from oneformer.modeling.transformer_decoder.oneformer_transformer_decoder import (
    ContrastiveMultiScaleMaskedTransformerDecoder,
)
from tests.tiny import tiny_cfg


def make_decoder(is_train=True, dropout=0.0, dec_layers=4):
    cfg = tiny_cfg(is_train=is_train)
    cfg.MODEL.ONE_FORMER.DROPOUT = dropout
    cfg.MODEL.ONE_FORMER.DEC_LAYERS = dec_layers
    torch.manual_seed(0)
    return ContrastiveMultiScaleMaskedTransformerDecoder(cfg, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, True)


def inputs(b=2, c=32, h=32, w=48, hidden=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(b, c, h // s, w // s, generator=g) for s in (8, 4, 2)]
    return x, torch.randn(b, c, h, w, generator=g), torch.randn(b, hidden, generator=g)


def test_output_structure():
    dec = make_decoder(is_train=True).train()
    x, mf, tasks = inputs()
    out = dec(x, mf, tasks)
    assert out["pred_logits"].shape == (2, 10, 6)
    assert out["pred_masks"].shape == (2, 10, 32, 48)
    assert len(out["aux_outputs"]) == 3  # DEC_LAYERS 4 = initial prediction + 3 layers
    assert out["contrastive_logits"].shape == (2, 10, 64)
    dec.eval()
    out = dec(x, mf, tasks)
    assert out["aux_outputs"] == []
    assert make_decoder(is_train=False).eval()(x, mf, tasks)["contrastive_logits"] is None


def test_eval_shortcut_matches_training_computation():
    # eval computes intermediate attention masks from resized mask features; training resizes full masks
    dec = make_decoder(dropout=0.0)
    x, mf, tasks = inputs()
    with torch.no_grad():
        dec.train()
        a = dec(x, mf, tasks)
        dec.eval()
        b = dec(x, mf, tasks)
    assert torch.allclose(a["pred_logits"], b["pred_logits"], atol=1e-5)
    assert torch.allclose(a["pred_masks"], b["pred_masks"], atol=1e-5)


@pytest.mark.parametrize("onednn", [False, True])
def test_separable_class_transformer_attention_matches_sdpa(monkeypatch, onednn):
    """In float32 CPU inference the class transformer attends to its positional-encoding memory through the
    separable-value kernel; the outputs equal those of the plain attention."""
    import oneformer.modeling.transformer_decoder.transformer as transformer
    from oneformer.modeling.cpu_linear import onednn_linear_available, use_onednn_linear
    from oneformer.ops.separable_attention import separable_kernel_applies

    with torch.no_grad():
        if not separable_kernel_applies(torch.zeros(1), training=False):
            pytest.skip("oneformer.ops._C is not built")
    if onednn and not onednn_linear_available():
        pytest.skip("this PyTorch has no oneDNN linear op")
    dec = make_decoder(is_train=False).eval()
    if onednn:
        use_onednn_linear(dec)
    x, mf, tasks = inputs()
    calls = []
    kernel = transformer.separable_value_attention
    monkeypatch.setattr(transformer, "separable_value_attention", lambda *a: calls.append(1) or kernel(*a))
    with torch.no_grad():
        got = dec(x, mf, tasks)
        assert len(calls) == len(dec.class_transformer.decoder.layers)
        monkeypatch.setattr(transformer, "separable_kernel_applies", lambda x, training: False)
        ref = dec(x, mf, tasks)
    assert len(calls) == len(dec.class_transformer.decoder.layers)
    torch.testing.assert_close(got["pred_logits"], ref["pred_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["pred_masks"], ref["pred_masks"], rtol=1e-4, atol=1e-4)


def test_query_initialization_wiring():
    """Initial queries = class_transformer(memory = PE(mask features), key offset = class_input_proj(mask features),
    tgt = decoder_norm(task) repeated N-1 times, positions = query_embed[:N-1]) followed by the task token itself."""
    dec = make_decoder(is_train=True).eval()
    x, mf, tasks = inputs()
    with torch.no_grad():
        out = dec(x, mf, tasks)["contrastive_logits"]  # (B, N, C)
        task = dec.decoder_norm(tasks.unsqueeze(0))
        hs, _ = dec.class_transformer(dec.pe_layer(mf, None), None, dec.query_embed.weight[:-1],
                                      dec.class_input_proj(mf), task)
    assert torch.allclose(out[:, :-1], hs[0], atol=1e-6)
    assert torch.allclose(out[:, -1], task[0], atol=1e-6)
    # image content enters only through the keys: with the key offset zeroed, the queries ignore the image
    with torch.no_grad():
        dec.class_input_proj.weight.zero_()
        dec.class_input_proj.bias.zero_()
        a = dec(x, mf, tasks)["contrastive_logits"]
        b = dec(x, mf * 3 + 1, tasks)["contrastive_logits"]
    assert torch.allclose(a, b, atol=1e-6)


def test_queries_with_empty_masks_stay_finite():
    dec = make_decoder().eval()
    x, mf, tasks = inputs()
    with torch.no_grad():
        dec.mask_embed.layers[-1].weight.zero_()
        dec.mask_embed.layers[-1].bias.fill_(-10.0)  # every mask logit negative: all keys blocked
        out = dec(x, mf, tasks)
    assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["pred_masks"]).all()


def test_rejects_bad_settings():
    cfg = tiny_cfg()
    cfg.MODEL.ONE_FORMER.DEC_LAYERS = 0
    with pytest.raises(ValueError, match="DEC_LAYERS"):
        ContrastiveMultiScaleMaskedTransformerDecoder(cfg, 32, True)
    dec = make_decoder()
    x, mf, tasks = inputs()
    with pytest.raises(ValueError, match="3 feature levels"):
        dec(x[:2], mf, tasks)
