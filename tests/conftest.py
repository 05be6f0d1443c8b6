"""Shared fixtures: apps built by the factory, generated images, a random-init SAM checkpoint.

Tests never need real weights or the team's data: images are generated (sam_droplet.tools.synthetic)
and the SAM checkpoint is a randomly initialised vit_t saved at test time and loaded through the
same code path the server uses. Tests that read ../shared/data skip with a message when it is absent.

Two tiers: ``make test`` runs ``-m "not system"`` (units and the API on generated images, in
minutes); ``make test-all`` adds the ``system`` tier: real servers, nginx, redis, the browser,
fuzzing, and every test that loads SAM (marked here by the fixtures it uses).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_droplet.pipeline import Engine
from sam_droplet.settings import EngineSettings
from sam_droplet.tools import synthetic
from sam_droplet.web import create_app
from sam_droplet.web.config import Config, ServerSettings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


# A test that uses one of these loads SAM (random weights, seconds per image on a CPU): system tier.
SAM_FIXTURES = {"random_checkpoint", "sam_settings", "sam_engine", "sam_app", "sam_client", "server_env"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SAM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)


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
    return Engine.start(EngineSettings(segmenter="classical"))


@pytest.fixture()
def app(classical_engine):
    return create_app(Config(server=ServerSettings(max_upload_mb=8, max_image_pixels=4_000_000)), engine=classical_engine)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised MobileSAM (vit_t) state dict, saved like the real mobile_sam.pt."""
    from sam_droplet.sam.model import save_random_checkpoint

    return save_random_checkpoint(tmp_path_factory.mktemp("model") / "mobile_sam.pt", "vit_t", seed=0)


@pytest.fixture(scope="session")
def sam_settings(random_checkpoint) -> EngineSettings:
    return EngineSettings(
        segmenter="sam",
        model_path=random_checkpoint,
        device="cpu",
        sam_batch_size=4,
        grid_points_per_side=4,
        grid_crop_n_layers=0,
    )


@pytest.fixture(scope="session")
def sam_engine(sam_settings) -> Engine:
    return Engine.start(sam_settings)


@pytest.fixture()
def sam_app(sam_engine):
    return create_app(Config(), engine=sam_engine)


@pytest.fixture()
def sam_client(sam_app):
    return sam_app.test_client()


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
