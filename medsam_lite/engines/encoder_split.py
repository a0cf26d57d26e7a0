"""The exported image encoder cut in two at a stage boundary, each part an OpenVINO model of its own that compiles
with its own precision: how ``--precision mixed`` runs the convolution stage (patch embedding and stage 0, the
MBConv blocks and their downsampling) in f32 and the transformer stages and the neck under the bf16 hint. The CPU
plugin offers no per-layer precision from Python (marking layers with ``disable_fp16_compression`` changed no
output), so the cut is two compiled models, the first one's output (stage 1's input tokens, (1, 16384, 128)
float32: 8 MiB) handed to the second where it lies (``ChainedRequest``).

Why stage 0: on the hippocampus volumes, the cases that decide every approximate mode, stage 0 alone in bf16 moves
DSC by -0.012 on average while the rest of the encoder in bf16 moves it by -0.001 (10 volumes, official weights,
2-core Xeon with AMX; docs/precision.md). What stage 0's bf16 rounds that costs them is its residual stream, the
input of each MBConv block's first (expanding) convolution: the blocks' last 1x1 convolutions (the projections
back to 64 channels, whose output is added to that stream in f32) run on the bf16 units with nothing measurable
lost, 5-20 ms a pass faster (``mbconv_projections``; the 18 ``cases_mm`` images' embedding 0.0330 -> 0.0334 of its
norm from f32, against 0.0435 with the expanding ones too).
"""
from __future__ import annotations

from medsam_lite.engines.linears_bf16 import ops_in_bf16
from medsam_lite.engines.openvino_import import import_openvino

ov = import_openvino()

# The first stage of the encoder that `--precision mixed` runs under the bf16 hint (everything before it f32).
MIXED_FIRST_BF16_STAGE = "layers.1"


def stage_boundary(model, stage: str):
    """The output (``ov.Output``) that feeds stage ``stage`` of the encoder (``layers.1``, ..., ``neck``) from
    before it: the first input of an op of that stage that comes from outside it and is not a constant."""
    prefix = f"/image_encoder/{stage}/"
    for op in model.get_ordered_ops():
        if op.get_friendly_name().startswith(prefix):
            for port in op.inputs():
                source = port.get_source_output()
                node = source.get_node()
                if node.get_type_name() != "Constant" and not node.get_friendly_name().startswith(prefix):
                    return source
    raise ValueError(f"no stage {stage} in the encoder")


def split_encoder(whole, stage: str):
    """The encoder ``whole`` (an ``ov.Model`` read from its IR) -> (head, tail) models: head from the image to the
    input of ``stage`` (made of ``whole``'s own nodes), tail from there to the embedding (of a copy); the tail's one
    parameter takes the head's one output."""
    head = ov.Model([stage_boundary(whole, stage)], whole.get_parameters(), "image_encoder_head")
    rest = whole.clone()  # a graph of its own for the cut to rewire: 7 ms, where reading the IR again took 25-65 ms
    cut = stage_boundary(rest, stage)
    parameter = ov.op.Parameter(cut.get_element_type(), cut.get_partial_shape())
    for port in list(cut.get_target_inputs()):
        port.replace_source_output(parameter.output(0))
    return head, ov.Model(rest.get_results(), [parameter], "image_encoder_tail")


def _is_bias_add(node) -> bool:
    return node.get_type_name() == "Add" and node.input(1).get_source_output().get_node().get_type_name() == "Constant"


def _before_bias_and_gelu(output):
    """The op that ``output`` comes from, past the bias Adds and GELUs that lie between two convolutions."""
    node = output.get_node()
    while node.get_type_name() == "Gelu" or _is_bias_add(node):
        node = node.input(0).get_source_output().get_node()
    return node


def _adds_to_residual(op) -> bool:
    """Whether ``op``'s output, once its bias is added, is added to the block's input (an Add of two tensors)."""
    readers = [port.get_node() for port in op.output(0).get_target_inputs()]
    if len(readers) != 1 or not _is_bias_add(readers[0]):
        return False
    after = [port.get_node() for port in readers[0].output(0).get_target_inputs()]
    return len(after) == 1 and after[0].get_type_name() == "Add" and not _is_bias_add(after[0])


def mbconv_projections(head) -> list:
    """The MBConv blocks' last 1x1 convolutions in the encoder's ``head`` (an ``ov.Model``; 2 blocks x 4 strips: 8):
    each reads its block's depthwise convolution (through its bias and GELU) and its output, plus bias, is added to
    the block's input. ``mixed`` runs them on the bf16 units (``linears_bf16.ops_in_bf16``)."""
    return [op for op in head.get_ordered_ops() if op.get_type_name() == "Convolution"
            and _before_bias_and_gelu(op.input(0).get_source_output()).get_type_name() == "GroupConvolution"
            and _adds_to_residual(op)]


class ChainedRequest:
    """The head's and the tail's infer requests as one: ``infer([image])`` -> the tail's outputs (an
    InferRequest's ``infer`` and ``get_compiled_model``, which is all the engine's encoder calls). The tail reads
    the head's output tensor where it lies: passing it on as an array copied it twice (166 -> 162 ms a pass, 2-core
    Xeon with AMX, 15 interleaved passes; the same embedding bit for bit)."""

    def __init__(self, head, tail) -> None:
        self.head, self.tail = head, tail

    def infer(self, inputs: list):
        self.head.infer(inputs, share_outputs=True)
        self.tail.set_input_tensor(self.head.get_output_tensor(0))
        return self.tail.infer(share_outputs=True)  # the engine copies the embedding out

    def get_compiled_model(self):
        return self.tail.get_compiled_model()


def mixed_encoder(whole):
    """``--precision mixed``'s two parts of the encoder ``whole`` (an ``ov.Model``): (head, tail) cut at
    ``MIXED_FIRST_BF16_STAGE``, the head's MBConv projections rewritten to run on the bf16 units; the head compiles
    f32, the tail bf16."""
    head, tail = split_encoder(whole, MIXED_FIRST_BF16_STAGE)
    ops_in_bf16(head, mbconv_projections(head))
    return head, tail
