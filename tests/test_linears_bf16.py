"""``--precision bf16-linears``: the image encoder's 60 linears given bf16 inputs in the graph and everything else
left f32; the rewrite itself (the mode on the real weights and real images: test_mixed_precision)."""
from __future__ import annotations

from medsam_lite.engines.linears_bf16 import bf16_linears, linears_in_bf16


def test_the_rewrite_gives_bf16_to_the_linears_alone(exports):
    """Every MatMul with a weight (q, k, v, the projections, the MLPs: 10 blocks x 6) takes bf16 and gives f32 on;
    the attention, the convolutions, the norms and the embedding stay f32."""
    import openvino as ov

    model = ov.Core().read_model(exports("seeded") / "image_encoder.xml")
    assert bf16_linears(model) == 0
    assert linears_in_bf16(model) is model and bf16_linears(model) == 60
    kept = {"ScaledDotProductAttention": 0, "Convolution": 0, "GroupConvolution": 0, "MVN": 0}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul":
            assert op.input(1).get_element_type() == ov.Type.bf16, op.get_friendly_name()
            assert {r.get_node().get_type_name() for r in op.output(0).get_target_inputs()} == {"Convert"}
        if op.get_type_name() in kept:
            assert op.input(0).get_element_type() == ov.Type.f32, op.get_friendly_name()
            kept[op.get_type_name()] += 1
    assert kept == {"ScaledDotProductAttention": 10, "Convolution": 38, "GroupConvolution": 24, "MVN": 22}
    assert model.output(0).get_element_type() == ov.Type.f32
    assert list(model.output(0).get_partial_shape().to_shape()) == [1, 256, 64, 64]



def test_a_product_of_two_activations_stays_f32():
    """Only a MatMul whose second input is a weight (a Constant, here behind a Transpose) is rewritten: a product of
    two activations (attention written out as MatMuls, as SAM's form has it) keeps its f32 inputs."""
    import numpy as np
    import openvino as ov

    opset = ov.opset13
    x, y = opset.parameter([4, 8], np.float32), opset.parameter([8, 4], np.float32)
    weight = opset.transpose(opset.constant(np.ones((3, 8), np.float32)), opset.constant(np.array([1, 0])))
    activations, linear = opset.matmul(x, y, False, False), opset.matmul(x, weight, False, False)
    model = linears_in_bf16(ov.Model([activations, linear], [x, y]))
    assert bf16_linears(model) == 1
    assert activations.input(0).get_element_type() == ov.Type.f32
    assert linear.input(1).get_element_type() == ov.Type.bf16
    assert model.output(1).get_element_type() == ov.Type.f32
