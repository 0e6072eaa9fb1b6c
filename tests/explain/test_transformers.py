"""Vision transformers (torchvision's VisionTransformer, small configurations): gradients through
attention against torch.autograd; Grad-CAM on the patch grid against pytorch-grad-cam with its
documented ViT reshape transform; LRP against Gradient x Input of the same model with the
attention weights, LayerNorm's std and GELU's gate detached (the rules' limit as epsilon -> 0),
computed with autograd on a forward written out here; the graph exported with parity."""

from __future__ import annotations

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
from chexplain.models.manifest import CHEXPERT_CLASSES, Manifest, Preprocessing
from chexplain.runtime import preprocess, read_radiograph

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


def test_gradients_through_attention_equal_autograd():
    model = _vit(64)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[2, 10, 0], [1, 3, 5]])
    layers = [LAST, "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_0.self_attention"]
    with torch.no_grad():
        explainer = Explainer(model, []).double()
        ours = explainer.class_gradients(x, targets, layers[:2])
        ours_input = explainer.class_gradients(x, targets)["input"]
    stored: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: stored.__setitem__(n, o))
             for n in layers[:2]]
    xr = x.clone().requires_grad_()
    logits = model(xr)
    for hook in hooks:
        hook.remove()
    for k in range(3):
        chosen = logits.gather(1, targets[:, k:k + 1]).sum()
        grads = torch.autograd.grad(chosen, [xr, *(stored[n] for n in layers[:2])], retain_graph=True)
        for name, mine, theirs in zip(["input", *layers[:2]], [ours_input, *ours.values()], grads):
            assert (mine[:, k] - theirs).abs().max() <= 1e-5 * theirs.abs().max(), (name, k)


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
                             for c in TARGETS[0].tolist()], 1)
    with torch.no_grad():
        ours = Explainer(model, [LRP("z", stabilizer=1e-9)]).double()(x, TARGETS)["lrp"]
    assert float((ours - reference).norm() / reference.norm()) <= 1e-4


@pytest.fixture(scope="module")
def vit_graph(tmp_path_factory) -> tuple[dict, onnx.ModelProto]:
    model = _vit(64, torch.float32)
    manifest = Manifest(name="vit-small", architecture="vit_b_16", preprocessing=Preprocessing(size=(64, 64)))
    selection = parse_classes("topk:2", CHEXPERT_CLASSES)
    module = ExplainedGraph(Explainer(model, [GradCAM(LAST), LRP("epsilon-plus-flat-bn")]), selection)
    path = tmp_path_factory.mktemp("vit") / "model.onnx"
    export_onnx(module, manifest, path)
    return check_parity(module, path, manifest, [IMAGES / "00022178_000.png", SIIM]), onnx.load(str(path))


def test_the_exported_transformer_equals_pytorch_and_tensorrt_parses_it(vit_graph):
    parity, graph = vit_graph
    assert parity["passed"], parity["outputs"]
    assert parity["outputs"]["lrp"]["scale"] > 0 and parity["outputs"]["gradcam"]["scale"] > 0
    check_tensorrt_parsable(graph)
