"""The exported forms of the model (``modeling.common.exported_form``): what ``engines.export`` traces for
OpenVINO computes SAM's sums in another order, never other sums, and the switch is scoped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_lite.engines.checkpoint import load_model
from medsam_lite.modeling.common import ExportForm, exported_form

from .conftest import shared_case
from .test_decoder_split import DEMO_CASE, _case_inputs

CHECKPOINTS = ["seeded", "demo", "random", "official"]  # all but seeded: the shared checkpoints


def _case(which: str):
    if which == "seeded":
        return DEMO_CASE
    return shared_case("2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz")


def _assert_rounding_only(exported: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    scale = max(float(reference.abs().max()), 1.0)
    assert float((exported - reference).abs().max()) <= 2e-6 * scale, what
    assert np.mean((exported > 0).numpy() == (reference > 0).numpy()) > 0.99999, what


@pytest.mark.parametrize("which", CHECKPOINTS)
def test_exported_decoder_differs_from_sams_by_rounding_only(checkpoint_path, which):
    """Block-diagonal heads, the first layer's image side heads first, projections moved to the prompt side and
    the final attention for the one token a box's mask reads: box masks and the four point-prompt masks with
    their IoU estimates, against SAM's form of the same model. The exported form's image is prepared in that
    form too, as the export's image part is."""
    model, _ = load_model(checkpoint_path(which))
    embedding, boxes = _case_inputs(model, _case(which), limit=6)
    coords = torch.tensor([[[60.0, 70.0], [150.0, 40.0], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    with torch.no_grad():
        prepared = model.prepare_decoder(embedding)
        sparse = model.prompt_encoder.embed_boxes(boxes)
        reference, _ = model.mask_decoder.predict(prepared, sparse)  # SAM's own sums, all seven tokens
        points_reference = model.decode_prompts(prepared, coords, labels)
        with exported_form(model.mask_decoder):
            heads_first = model.prepare_decoder(embedding)
            exported = model.mask_decoder.predict_mask(heads_first, sparse)
            points = model.decode_prompts(heads_first, coords, labels)
    assert not torch.equal(exported, reference), "the exported form is another order of the sums"
    _assert_rounding_only(exported, reference, "box logits")
    _assert_rounding_only(points[0], points_reference[0], "point-prompt logits")
    assert float((points[1] - points_reference[1]).abs().max()) <= 1e-5


def test_exported_form_is_scoped_and_restored_after_an_error(checkpoint_path):
    """Training and the torch engine keep SAM's form: the switch holds only inside the block, errors too."""
    model, _ = load_model(checkpoint_path("seeded"))
    parts = [m for m in model.modules() if isinstance(m, ExportForm)]
    assert len(parts) == 2 * 3 + 1 + 1 + 10 + 10 + 3, (
        "every Attention of the decoder (2 layers x 3, the final one), the encoder, its 10 attention blocks, their "
        "10 window attentions and its 3 patch merges")
    with pytest.raises(RuntimeError), exported_form(model):
        assert all(m.export_form for m in parts)
        raise RuntimeError("traced graph failed")
    assert not any(m.export_form for m in parts)
