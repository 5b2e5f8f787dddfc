"""fastcam.ray.BatchExplainer called as Ray calls it, in this process (no cluster needed): decoded arrays and
encoded bytes give the same rows; unreadable images are skipped rows, never a failed batch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import pytest
from PIL import Image

from fastcam_testkit.raycluster import CLASSES, LAYER, SPEC, Inputs

if TYPE_CHECKING:
    from fastcam.ray import BatchExplainer

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def explainer(inputs: Inputs) -> Iterator[BatchExplainer]:
    from fastcam.ray import BatchExplainer

    made = BatchExplainer(SPEC, weights=inputs.weights, num_classes=CLASSES, layer=LAYER)
    yield made
    made.close()


def test_decoded_arrays_and_encoded_bytes_give_the_same_rows(inputs: Inputs, explainer: BatchExplainer) -> None:
    names = ["im0.png", "im1.png", "im2.png"]
    encoded = explainer({"id": np.asarray(names, dtype=object),
                         "bytes": np.asarray([(inputs.data / n).read_bytes() for n in names], dtype=object)})
    decoded = explainer({"id": np.asarray(names, dtype=object),
                         "image": [np.asarray(Image.open(inputs.data / n)) for n in names]})
    assert list(encoded["status"]) == ["explained"] * 3
    for column in ("lowres", "scale", "logits", "target", "predicted"):
        assert np.array_equal(encoded[column], decoded[column]), column
    assert encoded["lowres"].dtype == np.float16 and float(encoded["lowres"].max()) == 1.0


def test_unreadable_images_are_skipped_rows(inputs: Inputs, explainer: BatchExplainer) -> None:
    good = (inputs.data / "im0.png").read_bytes()
    out = explainer({"id": np.asarray(["a", "b"], dtype=object), "bytes": np.asarray([b"junk", good], dtype=object)})
    assert list(out["status"]) == ["skipped", "explained"]
    # the reason names the row (its id, no path given), never a memory address that changes from run to run
    assert out["reason"][0] == "UnidentifiedImageError: cannot identify image file 'a'"
    assert np.isnan(out["logits"][0]).all() and out["target"][0] == -1 and out["scale"][0] == 0
    none = explainer({"id": np.asarray(["a"], dtype=object), "bytes": np.asarray([b"junk"], dtype=object)})
    assert list(none["status"]) == ["skipped"] and "can be read" in none["reason"][0]
