"""sam-droplet-look-shift: labelled pictures as other microscopes would show them."""

import cv2
import numpy as np
import pytest
from PIL import Image

from sam_droplet.tools import synthetic
from sam_droplet.tools.evaluate import match_instances, pairs_in, read_truth
from sam_droplet.tools.look_shift import SHIFTS, main, shift_look


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sparse")
    synthetic.sparse_emulsion(n=12, r_min=8, r_max=20, seed=3).write(folder, "a")
    return folder


def _picture(folder):
    (image_path, truth_path), *_ = pairs_in(folder)
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    return image, read_truth(truth_path, image.shape[:2])


def test_each_shift_changes_the_look_and_carries_the_labels_along(labelled):
    image, labels = _picture(labelled)
    unit = image.astype(np.float64) / (65535.0 if image.dtype == np.uint16 else 255.0)
    for shift in SHIFTS:
        picture, shifted = shift_look(image, labels, shift)
        assert picture.dtype == np.uint8 and shifted.dtype == np.uint16
        assert picture.shape[:2] == shifted.shape
        if shift == "half":
            assert shifted.shape == (labels.shape[0] // 2, labels.shape[1] // 2)
            # Every droplet is still there, half as wide.
            assert set(np.unique(shifted)) == set(np.unique(labels))
            ratio = np.sqrt(np.count_nonzero(shifted) / np.count_nonzero(labels))
            assert ratio == pytest.approx(0.5, abs=0.03)
        elif shift == "x1.6":
            assert shifted.shape == labels.shape
            centre = labels[labels.shape[0] // 2, labels.shape[1] // 2]
            assert shifted[labels.shape[0] // 2, labels.shape[1] // 2] == centre  # zoomed about the centre
        else:
            np.testing.assert_array_equal(shifted, labels)  # the geometry is untouched
    inverted, _ = shift_look(image, labels, "inverted")
    np.testing.assert_allclose(inverted / 255.0, 1.0 - unit, atol=1 / 255)
    flat, _ = shift_look(image, labels, "lowcontrast")
    assert flat.min() >= 0.35 * 255 - 1 and flat.max() <= 0.55 * 255 + 1
    noisy, _ = shift_look(image, labels, "noisy", seed=1)
    again, _ = shift_look(image, labels, "noisy", seed=1)
    np.testing.assert_array_equal(noisy, again)  # the noise is drawn from the seed
    assert 0.03 < np.std(noisy / 255.0 - unit) < 0.09


def test_an_unknown_shift_or_mismatched_labels_are_refused(labelled):
    image, labels = _picture(labelled)
    with pytest.raises(ValueError, match="unknown look shift"):
        shift_look(image, labels, "sepia")
    with pytest.raises(ValueError, match="differ in size"):
        shift_look(image, labels[1:], "half")
    many = labels.copy()
    many[many > 0] += 70000  # would wrap round in a 16-bit label image
    with pytest.raises(ValueError, match="65535"):
        shift_look(image, many, "inverted")
    with pytest.raises(SystemExit):
        main([str(labelled / "out"), str(labelled), "--shifts", "half,sepia"])


def test_the_command_writes_folders_the_evaluator_scores(labelled, tmp_path, capsys):
    assert main([str(tmp_path), str(labelled), "--shifts", "half,inverted"]) == 0
    assert "score them with: sam-droplet-evaluate" in capsys.readouterr().out
    for shift in ("original", "half", "inverted"):
        (image_path, truth_path), *rest = pairs_in(tmp_path / shift / labelled.name)
        assert not rest and image_path.name == "a.png"
        truth = np.asarray(Image.open(truth_path))
        assert truth.dtype == np.uint16 and truth.max() > 0
    # The original copy holds the same labels as the set.
    _, labels = _picture(labelled)
    copy = read_truth(tmp_path / "original" / labelled.name / "a_labels.png", labels.shape)
    assert match_instances(labels, copy).f1 == 1.0
