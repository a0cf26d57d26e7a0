"""This CPU as /proc/cpuinfo tells it (name, vendor and family, instruction-set flags), and the one choice of the
exact path that was measured to differ by kind of CPU: whether a volume's slices are encoded two side by side
(``OpenVINOEngine.encode_pair``). The results are the same bit for bit either way; only the time and the memory
differ (a second compiled encoder, about 240 MiB), so pairs run only on the kinds where they were measured to pay.
Cloud machines often name the CPU only "AMD EPYC": the family number is what tells Zen 4 (25) from Zen 5 (26).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _proc_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""  # not Linux: every field unknown


def cpuinfo_field(key: str, text: str | None = None) -> str | None:
    """The first ``key : value`` of /proc/cpuinfo (or of ``text``); None where there is none (not Linux)."""
    for line in (_proc_cpuinfo() if text is None else text).splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name with its vendor's family and model numbers, e.g. 'AMD EPYC (family 26 model 2)'."""
    name = cpuinfo_field("model name", cpuinfo) or platform.processor() or "unknown CPU"
    family, model = cpuinfo_field("cpu family", cpuinfo), cpuinfo_field("model", cpuinfo)
    return f"{name} (family {family} model {model})" if family and model else name


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of this CPU (of ``cpuinfo``, a /proc/cpuinfo text); empty where unknown."""
    return frozenset((cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_features(cpuinfo: str | None = None) -> str:
    """The instruction sets that decide OpenVINO's kernels (AVX2 .. AMX) this CPU has, e.g. 'avx2 avx512f
    avx512_vnni avx512_bf16'."""
    flags = cpu_flags(cpuinfo)
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    return " ".join(f for f in wanted if f in flags) or "no AVX2"


@dataclass(frozen=True)
class PairRule:
    """Whether a volume's slices go two side by side on one kind of CPU, and the measurement that decided it."""

    kind: str  # the kind, as the README names it
    vendor: str | None  # /proc/cpuinfo's vendor_id a CPU must have to be of this kind (None: any)
    family: str | None  # its "cpu family" (None: any)
    needs: frozenset[str]  # flags it must have
    pairs: bool  # whether the encoder's two streams pay there
    measured: str  # why: ms a slice, one at a time against in pairs (export format 10, the same embeddings)


# Most specific kind first. Two slices side by side on one thread each against one slice at a time on both
# threads, encoder passes on AMOS CT slices in interleaved rounds (medians).
PAIR_RULES = (
    PairRule("AMD Zen 4 (family 25 with AVX-512)", "AuthenticAMD", "25", frozenset({"avx512f"}), True,
             "2-core AMD EPYC, 30 rounds of 6 slices: 591 -> 568 ms a slice; microscopy 3D encoder stage "
             "66.2 / 66.7 -> 62.0 / 62.0 s"),
    PairRule("AMD Zen 5 (family 26)", "AuthenticAMD", "26", frozenset(), False,
             "2-core AMD EPYC, 20 and 30 rounds of 6 slices: 248.3 -> 258.6 and 245.7 -> 254.6 ms a slice "
             "(pairs 4 % slower)"),
    PairRule("AMX (amx_bf16)", None, None, frozenset({"amx_bf16"}), False,
             "2-core Xeon: 283 -> 284 ms a slice (no gain)"),
    PairRule("other", None, None, frozenset(), False, "not measured; one encoder keeps the peak memory lower"),
)


def pair_rule(cpuinfo: str | None = None) -> PairRule:
    """The rule for this CPU (or for ``cpuinfo``, a /proc/cpuinfo text)."""
    vendor, family = cpuinfo_field("vendor_id", cpuinfo), cpuinfo_field("cpu family", cpuinfo)
    flags = cpu_flags(cpuinfo)
    return next(rule for rule in PAIR_RULES if rule.vendor in (None, vendor) and rule.family in (None, family)
                and rule.needs <= flags)
