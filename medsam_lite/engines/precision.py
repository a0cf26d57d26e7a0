"""Precision modes and what ``--precision fast`` runs on this CPU. ``f32`` is exact (the official numbers);
``bf16`` (the encoder under OpenVINO's bf16 inference precision hint), ``int8`` (the export's NNCF encoder: its
linears in int8, its other layers under the bf16 hint) and ``mixed`` (the encoder's convolution stage f32 but for
its MBConv blocks' projections, its transformer stages and neck under the bf16 hint: ``engines.encoder_split``; the
box decoder's largest products on the bf16 units: ``engines.decoder_bf16``) and ``bf16-linears`` (the encoder's
linears on the bf16 units, everything else f32: ``engines.linears_bf16``) are approximate; the decoder runs f32 in
every mode but ``mixed``. ``fast`` is the fastest mode measured to meet the bar below (speed and accuracy) on this
kind of CPU (official weights, every labelled real case of the shared fixtures, ``benchmarks/bench_precision.py``).
The kind is told by the instruction sets that decide OpenVINO's kernels; a kind never measured gets f32. On a CPU
with AMX ``fast`` runs ``mixed``; on every other kind measured no approximate mode meets the bar and ``fast`` runs f32
(the rules' numbers below); the log and the timing CSV say which mode ran and why.
"""
from __future__ import annotations

from dataclasses import dataclass

from medsam_lite.engines.cpu import cpu_flags

MODES = ("f32", "bf16", "int8", "mixed", "bf16-linears")
CHOICES = (*MODES, "fast")

# The bar a mode must meet to be `fast` (the issue that introduced the modes): the encoder at least 2x the fp32
# pass on the same machine; mean DSC and mean NSD each within 0.005 of fp32; no case more than 0.03 below fp32.
MIN_SPEEDUP = 2.0
MAX_MEAN_CHANGE = 0.005
MAX_CASE_LOSS = 0.03


def meets_bar(speedup: float, mean_dsc_change: float, mean_nsd_change: float, worst_dsc_change: float) -> bool:
    """Whether a mode measured against fp32 on the same cases and machine qualifies for ``fast``."""
    return (speedup >= MIN_SPEEDUP and abs(mean_dsc_change) <= MAX_MEAN_CHANGE
            and abs(mean_nsd_change) <= MAX_MEAN_CHANGE and worst_dsc_change >= -MAX_CASE_LOSS)


@dataclass(frozen=True)
class FastRule:
    """What ``fast`` runs on one kind of CPU, and the measurement that decided it."""

    kind: str  # the kind, as the log names it
    needs: frozenset[str]  # /proc/cpuinfo flags a CPU must have to be of this kind
    mode: str  # the mode `fast` runs there (one of MODES)
    measured: str  # why: the numbers (official weights, real labelled cases) behind the choice


# Most specific kind first. The approximate modes only pay where the CPU has units for them (without avx512_bf16
# OpenVINO runs bf16 in f32, or emulates it where there is AVX-512, by its CPU plugin's source; never measured
# faster), and their accuracy cost is the model's own, not the CPU's (bf16 lost the same 0.0585 on the same
# hippocampus volume on the Xeon and on the Zen 5).
FAST_RULES = (
    FastRule("AMX (amx_bf16, amx_int8)", frozenset({"amx_bf16", "amx_int8"}), "mixed",
             "2-core Xeon, OpenVINO 2026.4.1, export format 12, 42 labelled cases, passes interleaved: mixed (stage 0 "
             "f32 but its MBConv projections, the rest bf16) x2.05-2.13 of f32's in seven measurements on 2026-12-07 "
             "(the mixed before its bf16 projections x1.92-1.99 beside it, x1.86-2.06 before), mean DSC -0.0013, NSD "
             "-0.0002, worst case -0.026 (CT lesion 000010); with its box decoder's largest products bf16 too (x2.11 "
             "and x2.14, two more runs) mean DSC -0.0013, NSD -0.0000, worst case -0.024, the microscopy volume "
             "x1.71 of f32 whole; bf16 (the encoder) x2.44, worst case -0.060 "
             "(hippocampus); int8 (the linears, the rest bf16) x2.23, worst case -0.050; bf16-linears (the linears "
             "bf16, the rest f32) keeps the accuracy (worst case -0.019) at x1.58"),
    FastRule("AVX512-BF16 without AMX", frozenset({"avx512_bf16"}), "f32",
             "2-core AMD EPYC Zen 5, OpenVINO 2026.4.1, 42 labelled cases, passes interleaved: bf16 (the encoder) "
             "x1.78-1.85, mean DSC -0.0071, worst case -0.058; int8 (the linears, the rest bf16) x2.27-2.43, mean DSC "
             "+0.0010 / -0.0025 with two calibrations, but the worst case -0.040 / -0.032 (hippocampus volumes); "
             "Zen 4: bf16 x1.66"),
    FastRule("other (no bf16 units)", frozenset(), "f32",
             "not measured on this kind; bf16 has no units here (int8's other layers run f32) and int8 misses the "
             "worst-case bar wherever measured (the linears alone on the Zen 5: -0.032 to -0.040, hippocampus)"),
)


def fast_rule(flags: frozenset[str] | None = None) -> FastRule:
    """The rule for this CPU (``flags``: its instruction sets, read from /proc/cpuinfo when None)."""
    flags = cpu_flags() if flags is None else flags
    return next(rule for rule in FAST_RULES if rule.needs <= flags)


@dataclass(frozen=True)
class Precision:
    """A ``--precision`` as asked and the mode that runs."""

    asked: str  # one of CHOICES
    mode: str  # one of MODES
    note: str = ""  # the log's line on how `fast` was resolved ("" when a mode was named)

    @property
    def label(self) -> str:
        """The timing CSV's ``precision``: the mode, and ``fast=`` before it when fast chose it."""
        return f"fast={self.mode}" if self.asked == "fast" else self.mode


# The modes whose speed comes from bf16 instructions (int8's comes from its int8 linears), and the flags that have them.
BF16_MODES = ("bf16", "mixed", "bf16-linears")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def no_bf16_note(mode: str, flags: frozenset[str] | None = None) -> str:
    """The log's line where ``mode`` needs bf16 instructions this CPU (``flags``) lacks; "" otherwise. Measured
    faster only on CPUs with them; without them OpenVINO runs bf16 as f32 (no AVX-512) or emulates it."""
    flags = cpu_flags() if flags is None else flags
    if mode not in BF16_MODES or flags & BF16_FLAGS:
        return ""
    return (f"this CPU has no bf16 instructions (avx512_bf16, amx_bf16): --precision {mode} was measured faster than "
            f"f32 only on CPUs with them, and f32 is exact (README, 'Precision modes')")


def needs_openvino(asked: str, mode: str) -> str:
    """The error where the torch engine would run ``mode`` (an approximate one; ``asked`` as the user gave it)."""
    said = f"fast runs {mode} on this CPU, which" if asked == "fast" else mode
    return f"--precision {said} needs the OpenVINO engine (the torch engine runs f32 alone)"


def resolve(asked: str, flags: frozenset[str] | None = None) -> Precision:
    """``asked`` (a mode or ``fast``) -> the mode to run on this CPU (``flags``: its instruction sets)."""
    if asked not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {asked!r}")
    if asked != "fast":
        return Precision(asked, asked)
    rule = fast_rule(flags)
    why = "the fastest mode that meets the bar" if rule.mode != "f32" else "no faster mode meets the bar"
    return Precision(asked, rule.mode, f"--precision fast runs {rule.mode} on this CPU ({rule.kind}): {why} "
                                       f"({rule.measured}; README, 'Precision modes')")
