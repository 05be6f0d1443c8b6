"""The SAM path with a randomly initialised MobileSAM checkpoint, loaded exactly as the server loads one.

The random model's masks are meaningless; these tests check the machinery: loading and its failures,
encoder and decoder shapes, batching, pasting low-resolution logits into boxes, the fallback to the
detector's mask, the JSON contract in sam and grid mode.
"""

import io

import numpy as np
import pytest
import torch

from sam_droplet.config import Config
from sam_droplet.errors import StartupError
from sam_droplet.factory import create_app
from sam_droplet.instances import Instance
from sam_droplet.model import CheckpointError, build_sam, load_sam
from sam_droplet.pipeline import Engine
from sam_droplet.refine import ImageEmbedding, SamRefiner


def test_random_checkpoint_loads_through_the_server_path(random_checkpoint):
    model = load_sam(random_checkpoint, "vit_t", "cpu")
    assert model.device.type == "cpu" and not model.sam.training
    assert model.sam.image_encoder.__class__.__name__ == "TinyViT"
    assert sum(p.numel() for p in model.sam.parameters()) > 9_000_000


def test_missing_corrupt_and_mismatched_checkpoints(tmp_path, random_checkpoint):
    with pytest.raises(CheckpointError, match=r"not found.*weights download"):
        load_sam(tmp_path / "absent.pt", "vit_t", "cpu")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_sam(corrupt, "vit_t", "cpu")
    with pytest.raises(CheckpointError, match="does not match SAM_MODEL_TYPE=vit_b"):
        load_sam(random_checkpoint, "vit_b", "cpu")
    partial = tmp_path / "partial.pt"
    state = build_sam("vit_t").state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("mask_decoder")}, partial)
    with pytest.raises(CheckpointError, match="missing"):
        load_sam(partial, "vit_t", "cpu")


def test_segmenter_sam_refuses_to_start_without_weights(tmp_path):
    with pytest.raises(StartupError, match=r"SEGMENTER=sam needs SAM: SAM checkpoint not found: .*absent\.pt"):
        create_app(Config(segmenter="sam", model_path=tmp_path / "absent.pt"))


def test_segmenter_auto_falls_back_to_classical_and_says_so(tmp_path, caplog, small_png):
    app = create_app(Config(segmenter="auto", model_path=tmp_path / "absent.pt"))
    health = app.test_client().get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded" and body["segmenter"] == "classical" and "not found" in body["reason"]
    assert any("classical" in r.message for r in caplog.records)
    r = app.test_client().post("/segment_file", data={"file": (io.BytesIO(small_png), "a.png")})
    assert r.status_code == 200 and r.get_json()["segmenter"] == "classical"


def test_auto_uses_sam_when_the_checkpoint_loads(sam_config, sam_engine):
    engine = Engine(Config(**{**sam_config.__dict__, "segmenter": "auto"}), model=sam_engine.model)
    assert engine.default_segmenter == "sam" and engine.available_segmenters == ["auto", "sam", "classical", "grid"]


def test_health_with_model(sam_client):
    h = sam_client.get("/health").get_json()
    assert h["status"] == "ok" and h["model_loaded"] and h["model_type"] == "vit_t" and h["device"] == "cpu"
    assert h["checkpoint"].endswith("mobile_sam.pt") and h["cuda"] is None


def test_encoder_and_batched_decoder_shapes(sam_engine):
    refiner = SamRefiner(sam_engine.model, batch_size=3)
    rgb = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    emb = refiner.encode(rgb)
    assert tuple(emb.features.shape) == (1, 256, 64, 64)
    assert emb.original_size == (300, 500) and emb.input_size == (614, 1024)
    boxes = np.array([[10, 10, 50, 50], [100, 80, 160, 150], [300, 200, 380, 290]], np.float32)
    logits, scores = refiner.decode(emb, boxes, (boxes[:, :2] + boxes[:, 2:]) / 2)
    assert logits.shape == (3, 256, 256) and logits.dtype == np.float32
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_paste_resamples_only_inside_the_box(sam_engine):
    refiner = SamRefiner(sam_engine.model)
    emb = ImageEmbedding(features=None, original_size=(512, 512), input_size=(1024, 1024))  # 2x: 1 low-res px = 2 px
    logits = np.full((256, 256), -5.0, np.float32)
    yy, xx = np.mgrid[0:256, 0:256]
    logits[(xx - 50) ** 2 + (yy - 60) ** 2 < 10**2] = 5.0  # a disk of radius 20 image px at (100, 120)
    mask, verdict = refiner.paste(logits, emb, (70, 90, 131, 151))
    assert verdict == "ok" and mask.shape == (61, 61)
    assert mask.sum() == pytest.approx(np.pi * 20**2, rel=0.05)
    ys, xs = np.nonzero(mask)
    assert (xs.mean() + 70, ys.mean() + 90) == pytest.approx((100, 120), abs=1.0)
    _, verdict = refiner.paste(logits, emb, (300, 300, 340, 340))
    assert verdict == "escaped"
    _, verdict = refiner.paste(np.full((256, 256), -1.0, np.float32), emb, (0, 0, 20, 20))
    assert verdict == "empty"


def test_refine_keeps_one_instance_per_detection_and_batches(sam_engine):
    refiner = SamRefiner(sam_engine.model, batch_size=2)
    rgb = np.random.default_rng(1).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    dets = []
    for cx, cy in [(30, 30), (80, 60), (130, 100), (40, 100), (110, 25)]:
        yy, xx = np.mgrid[cy - 12 : cy + 13, cx - 12 : cx + 13]
        dets.append(Instance(cx - 12, cy - 12, (xx - cx) ** 2 + (yy - cy) ** 2 < 144, center=(cx, cy), radius=12.0))
    out, stats = refiner.refine(rgb, dets)
    assert len(out) == 5 and stats.prompts == 5 and stats.batches == 3
    assert stats.sam_masks + sum(stats.fallback.values()) == 5
    for inst in out:
        assert inst.source in ("sam", "detector") and inst.mask.dtype == bool and inst.area > 0
    assert {"encode", "decode", "paste"} <= set(stats.timing_ms)


def test_sam_mode_json_contract(sam_client, small_png):
    r = sam_client.post("/segment_file", data={"file": (io.BytesIO(small_png), "a.png")})
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["segmenter"] == "sam" and body["model"]["model_type"] == "vit_t"
    assert {"detect", "refine", "refine_encode", "refine_decode", "refine_paste"} <= set(body["timing_ms"])
    sam = body["summary"]["sam"]
    assert sam["prompts"] == body["summary"]["detector"]["droplets"] > 0
    assert sam["sam_masks"] + sum(sam["fallback"].values()) == sam["prompts"]
    for d in body["droplets"] + body["removed"]:
        assert d["source"] in ("sam", "detector") and d["mask"]["size"] == [192, 256]


def test_sam_mode_labels_format(sam_client, small_png):
    import cv2

    r = sam_client.post("/segment_file", data={"file": (io.BytesIO(small_png), "a.png"), "format": "labels"})
    labels = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (192, 256)


def test_grid_mode_runs_the_automatic_mask_generator(sam_client, small_png):
    r = sam_client.post(
        "/segment_file", data={"file": (io.BytesIO(small_png), "a.png"), "segmenter": "grid", "preset": "all_objects"}
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["segmenter"] == "grid" and body["summary"]["grid"]["points_per_side"] == 4
    assert "grid" in body["timing_ms"]
    for d in body["droplets"]:
        assert d["source"] == "grid"


def test_classical_still_available_with_a_model(sam_client, small_png):
    r = sam_client.post("/segment_file", data={"file": (io.BytesIO(small_png), "a.png"), "segmenter": "classical"})
    assert r.get_json()["segmenter"] == "classical" and r.get_json()["model"] is None
