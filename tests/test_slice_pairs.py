"""Slices of a volume encoded two side by side (``OpenVINOEngine.encode_pair``, ``pipeline.segment.SliceEncoder``):
each embedding is the one ``encode`` gives, bit for bit, and a volume's labels and its number of encoder passes
are those of encoding one slice at a time, with the sweeps' cache large or empty."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main
from medsam_lite.core.preprocess import image_to_model_input
from medsam_lite.engines.cpu import cpu_name, pair_rule
from medsam_lite.engines.openvino_engine import OpenVINOEngine
from medsam_lite.io.challenge import load_case
from medsam_lite.pipeline import segment
from medsam_lite.pipeline.segment import segment_3d

from .conftest import shared_case
from .test_propagation import VOLUME


@pytest.mark.parametrize("which", ["seeded", "official"])
def test_a_pair_gives_each_slice_its_own_embedding(exports, which):
    engine = OpenVINOEngine(exports(which))
    volume = load_case(VOLUME if which == "seeded" else shared_case("3DBox_CT_AMOS_amos_0018.npz")).image
    first, second = (image_to_model_input(volume[z])[0] for z in (len(volume) // 2, len(volume) // 2 + 1))
    alone = engine.encode(first), engine.encode(second)
    passes = engine.encoder_passes
    pair = engine.encode_pair(first, second)
    assert not np.array_equal(alone[0], alone[1])
    assert np.array_equal(pair[0], alone[0]) and np.array_equal(pair[1], alone[1])
    assert engine.encoder_passes == passes + 2
    assert len(engine._encode_streams) == 2  # the side-by-side path really ran (2 threads or more here)
    single = OpenVINOEngine(exports(which), threads=1)
    assert [np.array_equal(a, b) for a, b in zip(single.encode_pair(first, second), alone)] == [True, True]
    assert single._encode_streams == [] and single.encoder_passes == 2  # one thread: in turn


class OneAtATime:
    """An engine's encoder and decoder, slices encoded one at a time (as on a CPU where pairs do not pay)."""

    slice_pairs = False

    def __init__(self, engine) -> None:
        self._engine = engine
        self.pairs = 0

    def __getattr__(self, name):
        return getattr(self._engine, name)


class Counted(OneAtATime):
    """The engine with ``encode_pair`` used (as on a CPU where pairs pay), its calls counted."""

    slice_pairs = True

    def encode_pair(self, first, second):
        self.pairs += 1
        return self._engine.encode_pair(first, second)


def test_volume_in_pairs_equals_one_slice_at_a_time(ov_engines, monkeypatch):
    """Two boxes whose sweeps share slices 3..5 (test_propagation's): 10 passes with the cache, 13 without (the
    shared slices encoded again going down), in pairs or not; the same labels bit for bit."""
    monkeypatch.setattr(segment, "PAIRS_FROM", 0)
    engine = ov_engines("seeded")
    case = load_case(VOLUME)
    x0, y0, _, x1, y1, _ = case.boxes[0]
    boxes = np.array([[x0, y0, 3, x1, y1, 9], [x0 + 5, y0 + 5, 0, x1, y1, 5]])  # middles 6 and 2
    for cache_bytes, passes in ((1 << 30, 10), (0, 13)):
        results = []
        for wrapped in (OneAtATime(engine), Counted(engine)):
            before = engine.encoder_passes
            results.append(segment_3d(wrapped, case.image, boxes, cache_bytes=cache_bytes))
            assert engine.encoder_passes - before == passes, (cache_bytes, type(wrapped).__name__)
        assert np.array_equal(results[0], results[1])
        assert set(np.unique(results[0])) == {0, 1, 2}
        assert wrapped.pairs == passes // 2  # all but an odd one out went in pairs
    monkeypatch.setattr(segment, "PAIRS_FROM", 11)
    counted = Counted(engine)
    segment_3d(counted, case.image, boxes)
    assert counted.pairs == 0  # 10 slices to encode: fewer than PAIRS_FROM, one at a time


def cpuinfo(vendor: str, family: int, model: int, flags: str) -> str:
    return (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
            f"model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx2 {flags}\n")


def test_pairs_run_only_on_the_cpu_kinds_where_they_were_measured_to_pay(ov_engines):
    """Zen 4 gained 4 % a slice, Zen 5 lost 4 %, the Xeon with AMX gained nothing (engines.cpu.PAIR_RULES); a
    kind never measured keeps one encoder (less memory). Cloud CPUs named just 'AMD EPYC' differ by family."""
    zen4 = cpuinfo("AuthenticAMD", 25, 17, "avx512f avx512_bf16 avx512_vnni")
    zen5 = cpuinfo("AuthenticAMD", 26, 2, "avx512f avx512_bf16 avx512_vnni avx_vnni avx512_vp2intersect")
    zen3 = cpuinfo("AuthenticAMD", 25, 1, "fma")
    xeon = cpuinfo("GenuineIntel", 6, 143, "avx512f avx512_bf16 amx_bf16 amx_tile amx_int8")
    assert [pair_rule(text).pairs for text in (zen4, zen5, zen3, xeon, "")] == [True, False, False, False, False]
    assert [pair_rule(text).kind.split(" (")[0] for text in (zen4, zen5, zen3, xeon)] == \
        ["AMD Zen 4", "AMD Zen 5", "other", "AMX"]
    assert cpu_name(zen5) == "AMD EPYC (family 26 model 2)" and cpu_name("model name\t: Apple M2\n") == "Apple M2"
    assert ov_engines("seeded").slice_pairs is pair_rule().pairs  # this machine's own kind decides


def test_check_names_the_cpu_its_instruction_sets_and_what_its_kind_runs(exports):
    """`medsam-lite check`'s last line: what a report of speed or of a difference needs to say about the CPU."""
    import os

    from medsam_lite.cli.check import cpu_line

    zen4 = cpuinfo("AuthenticAMD", 25, 17, "avx512f avx512_bf16 avx512_vnni")
    xeon = cpuinfo("GenuineIntel", 6, 143, "avx512f avx512_bf16 amx_bf16 amx_tile amx_int8")
    assert cpu_line(zen4) == (f"cpu: AMD EPYC (family 25 model 17), {os.cpu_count()} logical CPUs (avx2 avx512f "
                              "avx512_vnni avx512_bf16); a volume's slices in pairs (AMD Zen 4 (family 25 with "
                              "AVX-512)); --precision fast runs f32 (AVX512-BF16 without AMX)")
    assert cpu_line(xeon).endswith("(avx2 avx512f avx512_bf16 amx_bf16 amx_int8); a volume's slices one at a time "
                                   "(AMX (amx_bf16)); --precision fast runs mixed (AMX (amx_bf16, amx_int8))")
    done = CliRunner().invoke(main, ["check", "--export-dir", str(exports("seeded")), "--engine", "openvino"])
    assert done.exit_code == 0 and done.stdout.splitlines()[-1] == cpu_line(), done.stdout
