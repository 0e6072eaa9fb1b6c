"""`chexplain export`: a model and its explanations -> one ONNX graph, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import MissingDependency
from ..grammar import (
    CHECKPOINT_KINDS,
    DEFAULT_CLASSES,
    DEFAULT_EPSILON,
    DEFAULT_EXPLAIN,
    DEFAULT_OPSET,
    DEFAULT_PRECISION,
    LRP_COMPOSITES,
    OPSET_RANGE,
    PARITY_MODES,
    PRECISIONS,
    split_list,
)
from ..optional import require
from . import console, options


@click.command()
@options.model("Model name, checkpoint file (chexplain, torchvision, TorchXRayVision or CheXNet style; see --arch) "
               "or an architecture name alone (resnet50, efficientnet_b0, ...: seeded weights, for a try or a benchmark).")
@options.out(None, "Output root [default: artifacts/ or $CHEXPLAIN_ARTIFACTS]; writes <out>/<model>/model.onnx.",
             name="out_root")
@options.images()
@click.option("--opset", type=click.IntRange(*OPSET_RANGE), default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset (TensorRT 10.3 on JetPack 6 parses up to 20).")
@click.option("--kind", type=click.Choice(CHECKPOINT_KINDS), default="auto", show_default=True, help="Checkpoint format.")
@click.option("--arch", default=None, metavar="NAME",
              help="The checkpoint's architecture, by torchvision name: resnet50, efficientnet_b0, "
                   "mobilenet_v3_large, regnet_y_400mf, convnext_tiny, shufflenet_v2_x1_0, squeezenet1_1, vgg16_bn, "
                   "... [default: a DenseNet, recognised from its keys].")
@click.option("--source-classes", default=None, metavar="A,B,...",
              help="Names of the checkpoint's outputs, in order, when they are not the 14 CheXpert classes.")
@click.option("--xrv-weights", default="all", show_default=True,
              help="Which TorchXRayVision weights a file holds (all, nih, pc, chex, mimic_nb, mimic_ch, rsna).")
@click.option("--name", default=None, help="Model name for the artifacts folder [default: from the checkpoint].")
@click.option("--trust-pickle", is_flag=True, help="Allow checkpoints that hold pickled objects (runs their code).")
@click.option("--explain", "explain", default=DEFAULT_EXPLAIN, show_default=True, metavar="METHODS",
              help="Explanations in the graph: gradcam, gradcam++, hirescam, layercam, guided-gradcam, "
                   f"lrp:<composite> ({', '.join(LRP_COMPOSITES)}); comma-separated; 'none' for the classifier alone.")
@click.option("--classes", "classes", default=DEFAULT_CLASSES, show_default=True, metavar="all|topk:N|input|A,B",
              help="Classes explained per image: every class, the N most probable (chosen in the graph), "
                   "a 'targets' input, or a fixed list of class names.")
@click.option("--layer", default=None,
              help="Grad-CAM target layer [default: the architecture's last spatial feature map: features.norm5 "
                   "for DenseNet, layer4 for ResNet, features for EfficientNet, MobileNet, ConvNeXt, SqueezeNet "
                   "and VGG, trunk_output for RegNet, conv5 for ShuffleNet].")
@click.option("--epsilon", type=float, default=DEFAULT_EPSILON, show_default=True, help="Epsilon of the LRP epsilon rules.")
@click.option("--expose-gradients", is_flag=True,
              help="Also output the Grad-CAM layer's activations and class gradients (any CAM variant can be computed from them).")
@click.option("--merge-batchnorm", is_flag=True,
              help="Canonizer: fold each BatchNorm into the convolution it directly follows before applying LRP rules.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
              help="Precision written into the graph (for TensorRT 11 and ONNX Runtime CUDA): fp32; mixed (the forward "
                   "and each class's work of the methods that keep their maps there in FP16: every CAM, the -bn LRP "
                   "composites; LRP's per-image factors and the other methods in FP32); fp16 (each class's work of "
                   "every method in FP16).")
@click.option("--parity", type=click.Choice(PARITY_MODES), default=PARITY_MODES[0], show_default=True,
              help="strict: exit 1 when the graph does not match PyTorch within tolerance; warn: say so and keep the "
                   "graph (studies of composites whose maps move with float rounding alone, e.g. lrp:epsilon-plus).")
@click.option("--triton", "triton_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a Triton model repository here (<model>-onnx with config.pbtxt, dynamic batching).")
@options.verbosity
def export(model, out_root, image_dir, opset, kind, arch, source_classes, xrv_weights, name, trust_pickle,
           explain, classes, layer, epsilon, expose_gradients, merge_batchnorm, precision, parity, triton_dir) -> None:
    """Export a model and its explanations to one ONNX graph, then check parity with PyTorch."""
    from .. import sample_images

    try:
        require("torch", "export")
        require("onnx", "export")
        from ..export.pipeline import export_model
    except MissingDependency as error:
        raise click.UsageError(str(error)) from None
    from ..runtime.backends import artifacts_dir
    from ..runtime.inputs.reader import expand_inputs

    images = expand_inputs([image_dir]) if image_dir else sample_images()
    checkpoint = {"kind": kind, "arch": arch, "xrv_weights": xrv_weights, "trust_pickle": trust_pickle, "name": name}
    if source_classes:
        checkpoint["source_classes"] = split_list(source_classes)
    with console.heartbeat("exporting"):
        report = export_model(model, out_root or artifacts_dir(), images, opset=opset, checkpoint_options=checkpoint,
                              explain=explain, classes=classes, layer=layer, epsilon=epsilon,
                              expose_gradients=expose_gradients, merge_batchnorm=merge_batchnorm,
                              precision=precision, log=console.info)
    if triton_dir:
        from ..export.triton import add_onnx_model

        folder = add_onnx_model(triton_dir, Path(report["onnx"]["path"]), report["model"])
        console.info(f"  Triton model {folder} (build the TensorRT model on the server: "
                     f"chexplain build-engine ... --triton {triton_dir})")
    if report["parity"]["untrained_head"]:
        console.warning("every logit is equal on the parity radiographs: the classifier's head looks untrained, so "
                        "its probabilities say nothing and its maps are empty; train it (chexplain train) or export "
                        "a trained checkpoint")
    _judge_parity(report["parity"], precision, strict=parity == PARITY_MODES[0])


def _judge_parity(parity: dict, precision: str, strict: bool) -> None:
    """Exit 1 (strict) or warn when the written graph does not match PyTorch, naming why."""
    if parity["passed"]:
        return
    failed = ", ".join(parity["failed"])
    if precision != "fp32":
        problem = (f"the {precision} graph's {failed} fall below the precision plan's criteria (see the report); "
                   f"the graph was written; --precision fp32 keeps them, and the -bn LRP composites keep their maps "
                   f"in reduced precision (docs/deployment.md, \"Precision plan\")")
    elif parity["reference_overflow"]:
        problem = (f"PyTorch's own {', '.join(parity['reference_overflow'])} holds NaN or inf on these radiographs: "
                   f"the rules overflow on this model (e.g. lrp:z divides by pre-activations near zero); "
                   f"choose another composite, e.g. lrp:epsilon")
    else:
        problem = f"the exported graph does not match PyTorch within tolerance ({failed}); see the report"
        if any(name.startswith("lrp") for name in parity["failed"]):
            problem += ("; LRP maps that move with float rounding alone come from a composite that is unstable on "
                        "this model (docs/explanations.md, \"Trustworthy LRP\"): the -bn composites are not")
    if strict:
        console.fail(problem)
    console.warning(problem + " (kept: --parity warn)")
