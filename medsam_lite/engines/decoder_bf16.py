"""The mask decoder's box part with its largest products on the CPU's bf16 units: how ``--precision mixed`` decodes
a box. Every MatMul of at least ``MIN_MACS`` multiply-adds (in export format 12: the upscaling's two linears in each
of its 4 strips, 402 M, and the image-side products of the attentions, 5 x 58.7 M: 696 of the box part's 763 M)
gets bf16 inputs in the graph and gives f32 on (``linears_bf16.ops_in_bf16``); the rest, the norms, softmaxes,
GELUs and the residual sums stay f32, and the model compiles under the f32 hint. On the 2-core Xeon with AMX
(official weights): one box on one thread 20.4 -> 14.3 ms by node sums, 24 boxes of a microscopy slice on the
engine's two streams 10.8 -> 7.9 ms a box; the logits of 6 ``cases_mm`` images' boxes move by 0.053 on average
(0.31 at most), 0.11 % of their foreground flips. Over the 42 labelled cases of ``benchmarks/bench_precision.py``
with the f32 encoder: mean DSC -0.0002, NSD -0.0007, worst case -0.0128; with ``mixed``'s encoder, against f32: mean
DSC -0.0013, NSD -0.0000, worst -0.0244 (``mixed``'s encoder alone: -0.0013, -0.0002, -0.0262). The products
under 30 M (the final attention's two, 8.4 M each; the first layer's per-head scores, 3.7 M) gave no more speed
(7.9 -> 7.8 ms a box) for half as much error again (0.081). The prompt decoder (points, the service) stays f32.
"""
from __future__ import annotations

from medsam_lite.engines.linears_bf16 import ops_in_bf16

MIN_MACS = 30_000_000  # multiply-adds of the smallest product rewritten (above: what smaller ones cost and gave)


def product_macs(op) -> int:
    """Multiply-adds of a MatMul with static shapes (0 where a shape is dynamic)."""
    first, out = op.input(0).get_partial_shape(), op.output(0).get_partial_shape()
    if first.is_dynamic or out.is_dynamic:
        return 0
    inner = first[-2] if op.get_attributes()["transpose_a"] else first[-1]
    total = inner.get_length()
    for dim in out:
        total *= dim.get_length()
    return total


def large_products(model) -> list:
    """The MatMuls of ``model`` (the decoder's box part) of at least ``MIN_MACS`` multiply-adds, in graph order."""
    return [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul" and product_macs(op) >= MIN_MACS]


def box_decoder_in_bf16(model):
    """``model`` (the box part, an ``ov.Model``, changed in place and returned) with its large products on bf16."""
    ops_in_bf16(model, large_products(model))
    return model
