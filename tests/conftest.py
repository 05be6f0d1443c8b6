"""Shared fixtures: apps built by the factory, generated images, a random-init SAM checkpoint.

Tests never need real weights or the team's data: images are generated (sam_droplet.synthetic) and the
SAM checkpoint is a randomly initialised vit_t saved at test time and loaded through the same code
path the server uses. Tests that read ../shared/data skip with a message when it is absent.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_droplet import synthetic
from sam_droplet.config import Config
from sam_droplet.factory import create_app
from sam_droplet.pipeline import Engine

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def packed() -> synthetic.SyntheticImage:
    """A packed bright-field monolayer, 512x640, about 350 droplets."""
    return synthetic.packed_monolayer(shape=(512, 640), radius=13.0, seed=11)


@pytest.fixture(scope="session")
def packed_png(packed) -> bytes:
    return png_bytes(packed.image)


@pytest.fixture(scope="session")
def fluorescent() -> synthetic.SyntheticImage:
    return synthetic.fluorescent_disks(shape=(480, 640), n=60, seed=5)


@pytest.fixture(scope="session")
def small_png() -> bytes:
    """A small sparse image (fast in sam mode with a random model)."""
    img = synthetic.sparse_emulsion(shape=(192, 256), n=8, r_min=10, r_max=24, seed=3)
    return png_bytes(img.image)


@pytest.fixture(scope="session")
def classical_engine() -> Engine:
    return Engine.start(Config(segmenter="classical"))


@pytest.fixture()
def app(classical_engine):
    return create_app(
        Config(segmenter="classical", max_upload_mb=8, max_image_pixels=4_000_000), engine=classical_engine
    )


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised MobileSAM (vit_t) state dict, saved like the real mobile_sam.pt."""
    from sam_droplet.model import save_random_checkpoint

    return save_random_checkpoint(tmp_path_factory.mktemp("model") / "mobile_sam.pt", "vit_t", seed=0)


@pytest.fixture(scope="session")
def sam_config(random_checkpoint) -> Config:
    return Config(
        segmenter="sam",
        model_path=random_checkpoint,
        device="cpu",
        sam_batch_size=4,
        grid_points_per_side=4,
        grid_crop_n_layers=0,
    )


@pytest.fixture(scope="session")
def sam_engine(sam_config) -> Engine:
    return Engine.start(sam_config)


@pytest.fixture()
def sam_client(sam_config, sam_engine):
    return create_app(sam_config, engine=sam_engine).test_client()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"team data not available: {SHARED_DATA} is absent (only on the team's machines)")
    return SHARED_DATA


# -- real server processes (deployment and resilience tests) -----------------------------------


@pytest.fixture(scope="session")
def server_env(random_checkpoint) -> dict[str, str]:
    # SEGMENTER=auto with a loadable checkpoint serves in sam mode, as a GPU server with real weights does.
    return {"SAM_MODEL_PATH": str(random_checkpoint), "SEGMENTER": "auto", "SAM_DEVICE": "cpu", "TORCH_THREADS": "1"}


@pytest.fixture(scope="session")
def slow_png() -> bytes:
    """About 100 droplets: several seconds in sam mode on a CPU, long enough to signal mid-request."""
    return png_bytes(synthetic.packed_monolayer(shape=(320, 400), radius=16.0, seed=5).image)
