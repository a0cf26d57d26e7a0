"""The exported image encoder with its 60 linears (q, k, v, the projections and the MLPs of stages 1-3) on the
CPU's bf16 units and everything else f32: how ``--precision bf16-linears`` runs. Each linear's input and weight
are converted to bf16 in the graph and its output back to f32, and the model compiles under the f32 hint; OpenVINO
then runs those products on AMX-BF16 (``brgemm_avx512_amx_bf16``) and fuses the conversions into the element-wise
subgraphs around them, while the convolution stage, attention, norms and the residual stream stay f32, where the
bf16 hint rounds them too. On the 2-core Xeon with AMX (official weights, export format 12): the embedding of the
18 ``cases_mm`` images moves by 0.013-0.022 of its norm (``mixed`` 0.023-0.042, bf16 0.033-0.058); the pass runs
x1.58 of f32's (x1.54-1.60 in three runs; ``mixed`` x2.00, bf16 x2.44); over the 42 labelled cases of
``benchmarks/bench_precision.py`` mean DSC -0.0005, NSD +0.0006, worst case -0.0185: inside the accuracy bar of
``--precision fast``, short of its 2x (docs/precision.md). A linear's output is rounded to bf16 whatever follows
it (one 4096 x 512 x 256 product: 0.0033 relative), so products split into bf16 pieces cannot give f32 sums back
this way. The speed needs bf16 instructions: by the CPU plugin's source a CPU without AVX-512 (or AVX2-VNNI-2) gets
the bf16 types compiled as f32, one with AVX-512 and no AVX512-BF16 gets them emulated (not measured).
``ops_in_bf16``, the rewrite for any ops, also puts ``mixed``'s MBConv projections on the bf16 units
(``encoder_split.mbconv_projections``).
"""
from __future__ import annotations

from medsam_lite.engines.openvino_import import import_openvino

ov = import_openvino()
opset = ov.opset13


def _weight_is_constant(output) -> bool:
    """Whether a MatMul's second input is a weight: a Constant, maybe behind conversions and reshapes (the
    attention's products, query x key and weights x value, read other ops' outputs and stay f32)."""
    node = output.get_node()
    while node.get_type_name() in ("Convert", "Reshape", "Transpose", "Unsqueeze"):
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "Constant"


def ops_in_bf16(model, ops) -> None:
    """Give each op of ``ops`` (of ``model``, changed in place) bf16 inputs and its readers its output back in f32;
    then the model's types are inferred again. The op runs on the bf16 units and rounds its output to bf16 (above)."""
    for op in ops:
        readers = list(op.output(0).get_target_inputs())
        for port in op.inputs():
            port.replace_source_output(opset.convert(port.get_source_output(), "bf16").output(0))
        back = opset.convert(op.output(0), "f32")
        for reader in readers:
            reader.replace_source_output(back.output(0))
    model.validate_nodes_and_infer_types()


def linears_in_bf16(model):
    """Rewrite ``model`` (an ``ov.Model`` of the encoder, changed in place and returned): every MatMul with a
    constant weight gets bf16 inputs and an f32 output. The bias after it stays f32: added in bf16 inside the product
    the pass ran 6 % faster (221.0 -> 208.3 ms, Xeon with AMX) but the 42 cases lost more (mean DSC -0.0014 against
    -0.0005, worst case -0.0245 against -0.0185; docs/precision.md)."""
    ops_in_bf16(model, [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"
                        and _weight_is_constant(op.input(1).get_source_output())])
    return model


def bf16_linears(model) -> int:
    """How many MatMuls of ``model`` take bf16 inputs (60 in a rewritten LiteMedSAM encoder, 0 in an export)."""
    return sum(op.get_type_name() == "MatMul" and op.input(0).get_element_type() == ov.Type.bf16
               for op in model.get_ordered_ops())
