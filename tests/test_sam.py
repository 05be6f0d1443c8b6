"""The SAM path with a randomly initialised MobileSAM checkpoint, loaded exactly as the server loads one.

The random model's masks are meaningless; these tests check the machinery: loading and its failures,
encoder and decoder shapes, batching, pasting low-resolution logits into boxes, the fallback to the
detector's mask, the JSON contract in sam and grid mode.
"""

import io

import numpy as np
import pytest
import torch

from sam_droplet.engine.instances import Instance
from sam_droplet.errors import StartupError
from sam_droplet.pipeline import Engine
from sam_droplet.sam.model import CheckpointError, build_sam, load_sam
from sam_droplet.sam.refine import SamRefiner, View, plan_views
from sam_droplet.settings import EngineSettings
from sam_droplet.web import create_app
from sam_droplet.web.config import Config


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
        create_app(Config(engine=EngineSettings(segmenter="sam", model_path=tmp_path / "absent.pt")))


def test_segmenter_auto_falls_back_to_classical_and_says_so(tmp_path, caplog, small_png):
    app = create_app(Config(engine=EngineSettings(segmenter="auto", model_path=tmp_path / "absent.pt")))
    health = app.test_client().get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded" and body["segmenter"] == "classical" and "not found" in body["reason"]
    assert any("classical" in r.message for r in caplog.records)
    r = app.test_client().post("/segment_file", data={"file": (io.BytesIO(small_png), "a.png")})
    assert r.status_code == 200 and r.get_json()["segmenter"] == "classical"


def test_auto_uses_sam_when_the_checkpoint_loads(sam_settings, sam_engine):
    from dataclasses import replace

    engine = Engine(replace(sam_settings, segmenter="auto"), model=sam_engine.model)
    assert engine.default_segmenter == "sam" and engine.available_segmenters == ["auto", "sam", "classical", "grid"]


def test_health_with_model(sam_client):
    h = sam_client.get("/health").get_json()
    assert h["status"] == "ok" and h["model_loaded"] and h["model_type"] == "vit_t" and h["device"] == "cpu"
    assert h["checkpoint"].endswith("mobile_sam.pt") and h["cuda"] is None


def test_encoder_and_batched_decoder_shapes(sam_engine):
    refiner = SamRefiner(sam_engine.model, batch_size=3)
    rgb = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    enc = refiner.encode(rgb)
    assert tuple(enc.features.shape) == (1, 256, 64, 64) and enc.scale == pytest.approx(1024 / 500)
    boxes = np.array([[10, 10, 50, 50], [100, 80, 160, 150], [300, 200, 380, 290]], np.float64)
    regions = np.concatenate([boxes[:, :2] - 5, boxes[:, 2:] + 5], axis=1).astype(np.int64)
    logits, scores, tops, size = refiner.decode(enc, boxes, (boxes[:, :2] + boxes[:, 2:]) / 2, regions)
    # Regions of 50-100 px at 2.05 encoder px per image px need 16-cell windows (64 low-res px).
    assert size == 16 and logits.shape == (3, 64, 64) and logits.dtype == np.float32
    assert tops.shape == (3, 2) and np.all(tops % 4 == 0) and np.all(tops <= 256 - 64)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_windowed_decoder_equals_the_stock_decoder(sam_engine):
    from sam_droplet.sam.windowed_decoder import WindowedDecoder, stock_low_res

    sam = sam_engine.model.sam
    torch.manual_seed(1)
    with torch.inference_mode():
        emb = torch.randn(1, 256, 64, 64) * 3
        pts = torch.rand(5, 1, 2) * 1000
        boxes = torch.rand(5, 4) * 800
        boxes[:, 2:] = boxes[:, :2] + 80
        sparse, dense = sam.prompt_encoder(points=(pts, torch.ones(5, 1, dtype=torch.int64)), boxes=boxes, masks=None)
        ref, ref_iou = stock_low_res(sam, emb, sparse, dense)
        decoder = WindowedDecoder(sam)
        windows = torch.tensor([[0, 0], [3, 5], [20, 40], [48, 48], [10, 0]])
        got, iou = decoder.decode(decoder.share(emb), sparse, windows, 16)
    assert torch.allclose(iou, ref_iou, atol=1e-5)
    for i, (r, c) in enumerate(windows.tolist()):
        assert torch.allclose(got[i], ref[i, :, 4 * r : 4 * (r + 16), 4 * c : 4 * (c + 16)], atol=1e-4)


def test_paste_resamples_only_inside_the_box():
    view = View(0, 0, 512, 512)  # encoded at scale 2: one low-res pixel = 2 image pixels
    logits = np.full((64, 64), -5.0, np.float32)  # a window whose top-left low-res pixel is (32, 16)
    yy, xx = np.mgrid[32:96, 16:80]
    logits[(xx - 50) ** 2 + (yy - 60) ** 2 < 10**2] = 5.0  # a disk of radius 20 image px at (100, 120)
    mask, verdict = SamRefiner.paste(logits, (32, 16), 2.0, view, (70, 90, 131, 151))
    assert verdict == "ok" and mask.shape == (61, 61)
    assert mask.sum() == pytest.approx(np.pi * 20**2, rel=0.05)
    ys, xs = np.nonzero(mask)
    assert (xs.mean() + 70, ys.mean() + 90) == pytest.approx((100, 120), abs=1.0)
    _, verdict = SamRefiner.paste(logits, (32, 16), 2.0, view, (120, 130, 160, 160))
    assert verdict == "escaped"  # most of the mask lies outside this region
    edge = np.full((64, 64), -5.0, np.float32)
    edge[:, 30:40] = 5.0  # a band through the whole window goes on beyond it
    assert SamRefiner.paste(edge, (32, 16), 2.0, view, (70, 90, 131, 151))[1] == "escaped"
    _, verdict = SamRefiner.paste(np.full((64, 64), -1.0, np.float32), (32, 16), 2.0, view, (0, 0, 20, 20))
    assert verdict == "empty"


def test_views_tile_large_images_and_small_droplets():
    assert plan_views((1024, 1024), np.full(50, 30.0)) == [View(0, 0, 1024, 1024)]
    tiles = plan_views((1700, 2600), np.full(50, 40.0))
    assert len(tiles) > 1 and all(t.width <= 2048 and t.height <= 2048 for t in tiles)
    covered = np.zeros((1700, 2600), bool)
    for t in tiles:
        covered[t.y0 : t.y1, t.x0 : t.x1] = True
    assert covered.all()
    small = plan_views((600, 600), np.full(50, 8.0))
    assert len(small) > 1 and max(t.width for t in small) < 600  # 8 px droplets: tiles of 341 px


def test_refine_keeps_one_instance_per_detection_and_batches(sam_engine):
    refiner = SamRefiner(sam_engine.model, batch_size=2)
    rgb = np.random.default_rng(1).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    dets = []
    for cx, cy in [(30, 30), (80, 60), (130, 100), (40, 100), (110, 25)]:
        yy, xx = np.mgrid[cy - 12 : cy + 13, cx - 12 : cx + 13]
        dets.append(Instance(cx - 12, cy - 12, (xx - cx) ** 2 + (yy - cy) ** 2 < 144, center=(cx, cy), radius=12.0))
    out, stats = refiner.refine(rgb, dets)
    assert len(out) == 5 and stats.prompts == 5 and stats.batches == 3 and stats.views == 1
    assert stats.sam_masks + sum(stats.fallback.values()) == 5
    for inst in out:
        assert inst.source in ("sam", "detector") and inst.mask.dtype == bool and inst.area > 0
    assert {"encode", "decode", "paste"} <= set(stats.timing_ms)


def test_refine_tiles_small_droplets(sam_engine):
    refiner = SamRefiner(sam_engine.model, batch_size=8)
    rgb = np.random.default_rng(2).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    dets = []
    for cx in range(20, 400, 60):
        for cy in range(20, 400, 60):
            yy, xx = np.mgrid[cy - 4 : cy + 5, cx - 4 : cx + 5]
            dets.append(Instance(cx - 4, cy - 4, (xx - cx) ** 2 + (yy - cy) ** 2 < 16, center=(cx, cy), radius=4.0))
    out, stats = refiner.refine(rgb, dets)
    assert stats.views > 1 and len(out) == len(dets)


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


def test_grid_with_crop_layers_and_no_masks(sam_engine):
    # The random model's masks all fail SAM's quality thresholds: with crop layers the stock
    # generator then crashes (segment-anything #614); the service answers "no masks" instead.
    from sam_droplet.sam.grid import segment_grid

    rgb = np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    instances, stats = segment_grid(sam_engine.model, rgb, points_per_side=2, crop_n_layers=1)
    assert instances == [] and stats.masks == 0


def test_a_deadline_stops_the_grid_and_the_refinement(sam_engine, small_png):
    import sam_droplet as sd

    image = sd.read_image(small_png)
    for segmenter, stage in (("grid", "grid"), ("sam", "SAM decoding")):
        seen: list[str] = []

        def stop(name: str, stage: str = stage, seen: list[str] = seen) -> None:
            seen.append(name)
            if name == stage:
                raise TimeoutError(name)

        with pytest.raises(TimeoutError, match=stage):
            sam_engine.segment(image, sd.SegmentOptions(segmenter=segmenter), check=stop)
        assert seen[-1] == stage
