"""Vision transformers (torchvision's VisionTransformer, small configurations): gradients through
attention against torch.autograd; Grad-CAM on the patch grid against pytorch-grad-cam with its
documented ViT reshape transform; LRP against Gradient x Input of the same model with the
attention weights, LayerNorm's std and GELU's gate detached (the rules' limit as epsilon -> 0),
computed with autograd on a forward written out here; conservation where nothing but the input
holds relevance; robustness to noise far below one 8-bit step; the graph exported with parity."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

from chexplain.explain import LRP, Explainer, GradCAM
from chexplain.export.explained import ExplainedGraph
from chexplain.export.onnx_export import export_onnx
from chexplain.export.parity import check_parity
from chexplain.grammar import parse_classes
from chexplain.runtime import preprocess, read_radiograph
from chexplain.runtime.evaluation.robustness import map_robustness, noisy_copies
from chexplain.runtime.manifest import CHEXPERT_CLASSES, Manifest, Preprocessing

from calibrated import small_swin
from helpers import IMAGES, SIIM
from tensorrt_operators import check_tensorrt_parsable

TARGETS = torch.tensor([[2, 10, 0]])
LAST = "encoder.layers.encoder_layer_1.ln_1"


def _vit(image_size: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Two encoder blocks, two heads, weights perturbed away from torchvision's zero-initialised ones."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=image_size, patch_size=16, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=14)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.to(dtype).eval()


def _timm_vit(dtype: torch.dtype = torch.float64) -> nn.Module:
    """timm's ViT (fused scaled_dot_product_attention, q, k, v unbound from one projection), two
    blocks of three heads on 64 x 64 inputs, weights perturbed as above."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=14, img_size=64, depth=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.to(dtype).eval()


TIMM_LAST = "blocks.1.norm1"


def _assert_gradients_equal_autograd(model: nn.Module, x: torch.Tensor, layers: list[str]) -> None:
    """The explainer's class gradients at the input and at ``layers`` against torch.autograd's."""
    targets = torch.tensor([[2, 10, 0], [1, 3, 5]])
    explainer = Explainer(model, []).double()
    with torch.no_grad():
        ours = explainer.class_gradients(x, targets, layers)
        ours_input = explainer.class_gradients(x, targets)["input"]
    stored: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: stored.__setitem__(n, o))
             for n in layers]
    xr = x.clone().requires_grad_()
    logits = model(xr)
    for hook in hooks:
        hook.remove()
    for k in range(targets.shape[1]):
        chosen = logits.gather(1, targets[:, k:k + 1]).sum()
        grads = torch.autograd.grad(chosen, [xr, *(stored[n] for n in layers)], retain_graph=True)
        for name, mine, theirs in zip(["input", *layers], [ours_input, *ours.values()], grads):
            assert (mine[:, k] - theirs).abs().max() <= 1e-5 * theirs.abs().max(), (name, k)


def test_gradients_through_attention_equal_autograd():
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _assert_gradients_equal_autograd(_vit(64), x, [LAST, "encoder.layers.encoder_layer_0"])


def test_timm_vit_gradients_through_fused_attention_equal_autograd():
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _assert_gradients_equal_autograd(_timm_vit(), x, [TIMM_LAST, "blocks.0", "blocks.1.attn"])


def _unfused(model: nn.Module) -> nn.Module:
    """The same timm model on its unfused attention path (q @ k^T, softmax, @ v), as timm takes it
    when fused attention is switched off."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model


def test_timm_vit_gradients_through_unfused_attention_equal_autograd():
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _assert_gradients_equal_autograd(_unfused(_timm_vit()), x, [TIMM_LAST, "blocks.0", "blocks.1.attn"])


def test_timm_vit_explains_its_unfused_attention_as_its_fused_one():
    """A held constant in A @ v (softmax's output gates the product) gives the fused path's LRP;
    Grad-CAM follows the exact gradients of both."""
    model = _timm_vit()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[2, 10, 0], [1, 3, 5]])
    methods = [LRP("epsilon-plus-flat-bn"), GradCAM(TIMM_LAST)]
    with torch.no_grad():
        fused = Explainer(model, methods).double()(x, targets)
        unfused = Explainer(_unfused(model), methods).double()(x, targets)
    for key in ("lrp", "gradcam"):
        assert fused[key].abs().max() > 0
        torch.testing.assert_close(unfused[key], fused[key], rtol=1e-9, atol=1e-12 * fused[key].abs().max())


def _reshape_transform(tensor: torch.Tensor, side: int = 14) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT transform: drop the class token, tokens onto the patch grid."""
    return tensor[:, 1:, :].reshape(tensor.size(0), side, side, tensor.size(2)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("variant", ["gradcam", "gradcam++", "hirescam", "layercam"])
def test_cams_on_the_patch_grid_equal_pytorch_grad_cam(variant: str):
    from pytorch_grad_cam import GradCAM as TheirGradCAM
    from pytorch_grad_cam import GradCAMPlusPlus, HiResCAM, LayerCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _vit(224, torch.float32)
    x = torch.from_numpy(preprocess(read_radiograph(IMAGES / "00013125_000.png").pixels, Preprocessing())[0][None])
    classes = {"gradcam": TheirGradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM}
    with classes[variant](model=model, target_layers=[model.get_submodule(LAST)],
                          reshape_transform=_reshape_transform) as cam:
        theirs = np.stack([cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0] for c in TARGETS[0].tolist()])
    with torch.no_grad():
        raw = Explainer(model, [GradCAM(LAST, variant)])(x, TARGETS)["gradcam"][0].numpy()
    assert raw.shape == (3, 14, 14) and raw.max() > 0
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(raw, (224, 224))), theirs, atol=1e-4)


def test_timm_vit_cams_equal_pytorch_grad_cam_at_its_documented_layer():
    """pytorch-grad-cam's own ViT example: timm's model, the last block's norm1, the class token dropped."""
    from pytorch_grad_cam import GradCAM as TheirGradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from chexplain.models.architectures import default_layer, family_of

    assert default_layer("timm/vit_tiny_patch16_224") == "blocks.11.norm1"
    assert family_of("timm/vit_tiny_patch16_224").transformer
    model = _timm_vit(torch.float32)
    x = torch.from_numpy(preprocess(read_radiograph(IMAGES / "00013125_000.png").pixels,
                                    Preprocessing(size=(64, 64)))[0][None])
    with TheirGradCAM(model=model, target_layers=[model.blocks[-1].norm1],
                      reshape_transform=lambda tensor: _reshape_transform(tensor, 4)) as cam:
        theirs = np.stack([cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0] for c in TARGETS[0].tolist()])
    with torch.no_grad():
        raw = Explainer(model, [GradCAM(TIMM_LAST)])(x, TARGETS)["gradcam"][0].numpy()
    assert raw.shape == (3, 4, 4) and raw.max() > 0
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(raw, (64, 64))), theirs, atol=1e-4)


def _detached_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ViT forward written out with the attention weights, each LayerNorm's std and
    GELU's gate detached (x * (gelu(x) / x).detach())."""
    n = x.shape[0]

    def norm(module: nn.LayerNorm, z: torch.Tensor) -> torch.Tensor:
        centred = z - z.mean(-1, keepdim=True)
        return centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + module.eps).detach() \
            * module.weight + module.bias

    y = model.conv_proj(x).reshape(n, model.hidden_dim, -1).permute(0, 2, 1)
    y = torch.cat([model.class_token.expand(n, -1, -1), y], 1) + model.encoder.pos_embedding
    for layer in model.encoder.layers:
        attention, heads = layer.self_attention, layer.self_attention.num_heads
        z = norm(layer.ln_1, y)
        q, k, v = (z @ w.T + b for w, b in zip(attention.in_proj_weight.chunk(3), attention.in_proj_bias.chunk(3)))
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, -1).detach()
        y = y + attention.out_proj((weights @ v).transpose(1, 2).flatten(2))
        z = layer.mlp[0](norm(layer.ln_2, y))
        z = layer.mlp[3](z * (nn.functional.gelu(z) / z).detach())
        y = y + z
    return model.heads(norm(model.encoder.ln, y)[:, 0])


def test_lrp_equals_gradient_times_input_with_attention_and_normalisation_held():
    model = _vit(64)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    xr = x.clone().requires_grad_()
    logits = _detached_forward(model, xr)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))  # the same model
    reference = torch.stack([(xr * torch.autograd.grad(logits[0, c], xr, retain_graph=True)[0]).sum(1)
                             for c in TARGETS[0].tolist()], 1).detach()
    with torch.no_grad():
        ours = Explainer(model, [LRP("z", stabilizer=1e-9)]).double()(x, TARGETS)["lrp"]
    assert float((ours - reference).norm() / reference.norm()) <= 1e-4


def _assert_lrp_equals_detached_gradient_times_input(model: nn.Module, x: torch.Tensor,
                                                     detach_attention: Callable[[], None]) -> None:
    """LRP (z) against Gradient x Input of a copy of ``model`` with LayerNorm's std and GELU's gate
    detached, its attention weights detached by ``detach_attention`` (called after the explainer ran)."""
    with torch.no_grad():
        ours = Explainer(model, [LRP("z", stabilizer=1e-9)]).double()(x, TARGETS)["lrp"]
        expected_logits = model(x)
    reference_model = _normalisation_and_gates_detached(model)
    detach_attention()
    xr = x.clone().requires_grad_()
    logits = reference_model(xr)
    torch.testing.assert_close(logits.detach(), expected_logits)  # the same model, attention written out again
    reference = torch.stack([(xr * torch.autograd.grad(logits[0, c], xr, retain_graph=True)[0]).sum(1)
                             for c in TARGETS[0].tolist()], 1).detach()
    assert float((ours - reference).norm() / reference.norm()) <= 1e-4


def _detached_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                    enable_gqa=False):
    """F.scaled_dot_product_attention written out with its attention weights detached."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax(query @ key.transpose(-2, -1) * scale, -1).detach() @ value


def test_timm_vit_lrp_equals_gradient_times_input_with_attention_and_normalisation_held(monkeypatch):
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _assert_lrp_equals_detached_gradient_times_input(_timm_vit(), x, lambda: monkeypatch.setattr(
        nn.functional, "scaled_dot_product_attention", _detached_dot_product_attention))


@pytest.fixture(scope="module", params=["vit", "swin", "timm-vit", "timm-vit-unfused"])
def transformer_graph(request, tmp_path_factory) -> tuple[dict, onnx.ModelProto]:
    """The small ViT (64 x 64), Swin (36 x 36) or timm ViT (64 x 64; fused or unfused attention)
    exported with Grad-CAM and the default LRP, top 2."""
    model, size, layer, architecture = {
        "vit": lambda: (_vit(64, torch.float32), 64, LAST, "vit_b_16"),
        "swin": lambda: (small_swin(torch.float32), 36, "permute", "swin_t"),
        "timm-vit": lambda: (_timm_vit(torch.float32), 64, TIMM_LAST, "timm/vit_tiny_patch16_224"),
        "timm-vit-unfused": lambda: (_unfused(_timm_vit(torch.float32)), 64, TIMM_LAST, "timm/vit_tiny_patch16_224"),
    }[request.param]()
    manifest = Manifest(name=request.param, architecture=architecture, preprocessing=Preprocessing(size=(size, size)))
    module = ExplainedGraph(Explainer(model, [GradCAM(layer), LRP("epsilon-plus-flat-bn")]),
                            parse_classes("topk:2", CHEXPERT_CLASSES))
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    export_onnx(module, manifest, path)
    return check_parity(module, path, manifest, [IMAGES / "00022178_000.png", SIIM]), onnx.load(str(path))


@pytest.mark.slow  # an ONNX export of each transformer
def test_the_exported_transformer_equals_pytorch_and_tensorrt_parses_it(transformer_graph):
    parity, graph = transformer_graph
    assert parity["passed"], {name: parity["outputs"][name] for name in parity["failed"]}
    assert parity["outputs"]["lrp"]["scale"] > 0 and parity["outputs"]["gradcam"]["scale"] > 0
    check_tensorrt_parsable(graph)


SWIN_LAYERS = ["features.1.1", "features.2", "features.3.1.norm1", "permute"]


def test_swin_gradients_through_shifted_windows_equal_autograd():
    x = torch.randn(2, 3, 36, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _assert_gradients_equal_autograd(small_swin(), x, SWIN_LAYERS)


def _detached_window_attention(input, qkv_weight, proj_weight, relative_position_bias, window_size, num_heads,
                               shift_size, attention_dropout=0.0, dropout=0.0, qkv_bias=None, proj_bias=None,
                               logit_scale=None, training=True):
    """Shifted-window attention written out again with its attention weights detached: windows by
    unfold-free indexing of rolled, padded maps, one window at a time."""
    batch, height, width, channels = input.shape
    wh, ww = window_size
    padded = nn.functional.pad(input, (0, 0, 0, (ww - width % ww) % ww, 0, (wh - height % wh) % wh))
    ph, pw = padded.shape[1:3]
    shift = [0 if wh >= ph else shift_size[0], 0 if ww >= pw else shift_size[1]]
    rolled = torch.roll(padded, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    region = torch.zeros(ph, pw)
    if sum(shift):
        for i, rows in enumerate((slice(0, ph - wh), slice(ph - wh, ph - shift[0]), slice(ph - shift[0], ph))):
            for j, columns in enumerate((slice(0, pw - ww), slice(pw - ww, pw - shift[1]), slice(pw - shift[1], pw))):
                region[rows, columns] = 3 * i + j
    out = torch.zeros_like(rolled)
    head_dim = channels // num_heads
    for top in range(0, ph, wh):
        for left in range(0, pw, ww):
            tokens = rolled[:, top:top + wh, left:left + ww].reshape(batch, wh * ww, channels)
            labels = region[top:top + wh, left:left + ww].reshape(-1)
            mask = torch.where(labels[None, :] != labels[:, None], -100.0, 0.0).to(input.dtype)
            q, k, v = (tokens @ w.T + b for w, b in zip(qkv_weight.chunk(3), qkv_bias.chunk(3)))
            q, k, v = (t.unflatten(-1, (num_heads, head_dim)).transpose(1, 2) for t in (q, k, v))
            scores = q @ k.transpose(-2, -1) / head_dim ** 0.5 + relative_position_bias + mask
            mixed = (torch.softmax(scores, -1).detach() @ v).transpose(1, 2).reshape(batch, wh * ww, channels)
            out[:, top:top + wh, left:left + ww] = (mixed @ proj_weight.T + proj_bias).reshape(batch, wh, ww, channels)
    return torch.roll(out, shifts=tuple(shift), dims=(1, 2))[:, :height, :width]


class _GateDetachedGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (nn.functional.gelu(x) / x).detach()


def _normalisation_and_gates_detached(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each LayerNorm's std and each GELU's gate detached."""
    import copy

    from chexplain.explain.references import _DetachedStdLayerNorm

    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        owner, _, attribute = name.rpartition(".")
        parent = model.get_submodule(owner) if owner else model
        if isinstance(module, nn.LayerNorm):
            setattr(parent, attribute, _DetachedStdLayerNorm(len(module.normalized_shape), module.eps, module.weight,
                                                             module.bias))
        elif isinstance(module, nn.GELU):
            setattr(parent, attribute, _GateDetachedGELU())
    return model


def test_swin_lrp_equals_gradient_times_input_with_attention_and_normalisation_held(monkeypatch):
    import torchvision.models.swin_transformer as swin

    x = torch.randn(1, 3, 36, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _assert_lrp_equals_detached_gradient_times_input(small_swin(), x, lambda: monkeypatch.setattr(
        swin, "shifted_window_attention", _detached_window_attention))


def test_swin_cams_equal_pytorch_grad_cam_with_its_reshape_transform():
    from pytorch_grad_cam import GradCAM as TheirGradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = small_swin(torch.float32)
    x = torch.from_numpy(preprocess(read_radiograph(IMAGES / "00013125_000.png").pixels,
                                    Preprocessing(size=(36, 36)))[0][None])
    with TheirGradCAM(model=model, target_layers=[model.norm],
                      reshape_transform=lambda tensor: tensor.permute(0, 3, 1, 2)) as cam:
        theirs = np.stack([cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0] for c in TARGETS[0].tolist()])
    with torch.no_grad():
        raw = Explainer(model, [GradCAM("permute")])(x, TARGETS)["gradcam"][0].numpy()
    assert raw.shape == (3, 5, 5) and raw.max() > 0
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(raw, (36, 36))), theirs, atol=1e-4)


def _without_biases(model: nn.Module) -> nn.Module:
    """Every bias, the class token and the position embedding zeroed: then only the input can hold
    relevance, so the rules that hold softmax and normalisation constant conserve it."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and "relative_position" not in name or name.endswith(
                    ("class_token", "pos_embedding", "cls_token", "pos_embed")):
                parameter.zero_()
    return model


SMALL_TRANSFORMERS = {"vit": (lambda dtype: _vit(64, dtype), 64, LAST), "swin": (small_swin, 36, "permute"),
                      "timm-vit": (_timm_vit, 64, TIMM_LAST)}


@pytest.mark.parametrize("name", SMALL_TRANSFORMERS)
def test_transformer_lrp_conserves_the_logit_when_only_the_input_holds_relevance(name):
    build, size, _ = SMALL_TRANSFORMERS[name]
    model = _without_biases(build(torch.float64))
    x = torch.randn(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        relevance = Explainer(model, [LRP("z", stabilizer=1e-9)]).double()(x, TARGETS)["lrp"]
        logits = model(x)[0, TARGETS[0]]
    torch.testing.assert_close(relevance.sum((-2, -1))[0], logits, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", SMALL_TRANSFORMERS)
def test_transformer_maps_stay_put_under_noise_far_below_one_8bit_step(name):
    """The trustworthy-LRP robustness measure on the transformers: the worst of three noisy copies
    at 1e-4 and 1e-3 x the input's spread still correlates with the clean map (Pearson >= 0.99)."""
    build, size, layer = SMALL_TRANSFORMERS[name]
    image = preprocess(read_radiograph(IMAGES / "00013125_000.png").pixels, Preprocessing(size=(size, size)))[0]
    explainer = Explainer(build(torch.float32), [GradCAM(layer), LRP("epsilon-plus-flat-bn")])
    rng = np.random.default_rng(0)
    with torch.no_grad():
        clean = explainer(torch.from_numpy(image[None]), TARGETS)
        for level in (1e-4, 1e-3):
            noisy = explainer(torch.from_numpy(noisy_copies(image, level, 3, rng)), TARGETS.expand(3, -1))
            for method in ("gradcam", "lrp"):
                for k in range(TARGETS.shape[1]):
                    measured = map_robustness(clean[method][0, k].numpy(), [m[k].numpy() for m in noisy[method]])
                    assert measured["pearson"] >= 0.99, (method, level, k, measured)
