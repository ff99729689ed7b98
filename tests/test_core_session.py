"""Sessions: input validation, determinism, settings, demo model, weights acquisition."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nitrogen import BUTTON_NAMES, CheckpointError, EngineOptions, InferenceEngine, InferenceSession
from nitrogen.preprocess import pixel_values


@pytest.fixture(scope="module")
def demo_engine():
    engine = InferenceEngine.from_checkpoint("demo", device="cpu")
    yield engine
    engine.close()


FRAME = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((64, 64, 3), np.float32), "dtype is float32; expected uint8"),
    (np.zeros((64, 64), np.uint8), "rank 2"),
    (np.zeros((64, 64, 2), np.uint8), r"2 channels.*\(H, W, 3\) RGB or \(H, W, 4\) RGBA"),  # RGBA is accepted
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    (np.zeros((5000, 2, 3), np.uint8), "too large: the limit is 4096x4096"),  # the server's limit too
    ("frame.png", "got str"),
    (None, "got NoneType"),
])
def test_bad_frames_are_rejected_with_what_was_received(demo_engine, bad, expected):
    session = InferenceSession(demo_engine)
    with pytest.raises(ValueError, match=expected):
        session.predict(bad)
    with pytest.raises(ValueError, match="expected|limit"):
        session.submit(bad)


def test_pil_images_of_any_size_and_mode(demo_engine):
    session = InferenceSession(demo_engine)
    rgba = np.dstack([FRAME, np.full((256, 256), 7, np.uint8)])
    for img in [Image.fromarray(FRAME), Image.new("RGBA", (320, 200)), Image.new("L", (7, 900)), rgba]:
        pred = session.predict(img, seed=3)
        assert pred["j_left"].shape == (16, 2) and pred["buttons"].shape == (16, 21)
    np.testing.assert_array_equal(pixel_values(Image.fromarray(FRAME), 256), pixel_values(FRAME, 256))


def test_same_seed_same_actions_different_seed_different(demo_engine):
    a, b = InferenceSession(demo_engine), InferenceSession(demo_engine)
    first = a.predict(FRAME, seed=7)
    same = b.predict(FRAME, seed=7)
    for key in first:
        np.testing.assert_array_equal(first[key], same[key])
    other = InferenceSession(demo_engine).predict(FRAME, seed=8)
    assert not np.array_equal(first["j_left"], other["j_left"])
    unseeded = [InferenceSession(demo_engine).predict(FRAME)["j_left"] for _ in range(2)]
    assert not np.array_equal(*unseeded)


def test_decoded_values_are_in_range(demo_engine):
    pred = InferenceSession(demo_engine).predict(FRAME, seed=1)
    assert set(np.unique(pred["buttons"])) <= {0.0, 1.0}
    for key in ("j_left", "j_right"):
        assert pred[key].min() >= -1 and pred[key].max() <= 1


def test_explicit_noise(demo_engine):
    noise = np.random.default_rng(1).standard_normal((16, 25)).astype(np.float32)
    s = InferenceSession(demo_engine)
    np.testing.assert_array_equal(s.predict(FRAME, noise=noise)["j_left"],
                                  InferenceSession(demo_engine).predict(FRAME, noise=noise[None])["j_left"])
    with pytest.raises(ValueError, match=r"noise has shape \(3,\); expected \(16, 25\)"):
        s.predict(FRAME, noise=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="seed must be an integer"):
        s.predict(FRAME, seed="7")


def test_session_settings_are_validated(demo_engine):
    with pytest.raises(ValueError, match=r"context_length must be an integer in \[1, 1\]"):
        InferenceSession(demo_engine, context_length=2)
    with pytest.raises(ValueError, match="cfg_scale must be finite"):
        InferenceSession(demo_engine, cfg_scale=float("nan"))
    with pytest.raises(ValueError, match="no game conditioning"):
        InferenceSession(demo_engine, game="celeste")


def test_info_has_the_original_keys_and_ours(demo_engine):
    info = InferenceSession(demo_engine, cfg_scale=1.5).info()
    for key in ("ckpt_path", "selected_game", "old_layout", "cfg_scale", "context_length",
                "action_interleaving", "is_flowmatching", "action_downsample_ratio",
                "action_horizon", "action_dim", "buttons", "device", "dtype"):
        assert key in info
    assert info["ckpt_path"] == "demo" and info["cfg_scale"] == 1.5 and info["dtype"] == "float32"
    assert info["buttons"] == list(BUTTON_NAMES) and len(BUTTON_NAMES) == 21
    assert info["device"] == "cpu" and info["action_downsample_ratio"] == 1


def test_demo_is_fast_and_identical_across_builds():
    start = time.perf_counter()
    one = InferenceSession.from_checkpoint("demo", device="cpu", options=EngineOptions(warmup=False))
    assert time.perf_counter() - start < 5  # generous: "well under a second" is measured in the README
    two = InferenceSession.from_checkpoint("demo", device="cpu", options=EngineOptions(warmup=False))
    np.testing.assert_array_equal(one.predict_raw(FRAME, seed=5), two.predict_raw(FRAME, seed=5))
    one.engine.close(), two.engine.close()


def test_old_layout_reads_sticks_first(golden_dir, golden):
    g = golden("tiny-a")
    s = InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu", old_layout=True,
                                         options=EngineOptions(warmup=False))
    pred = s.predict(g["image_0"], seed=100)
    x = g["action_tensor_0"]
    np.testing.assert_allclose(pred["j_left"], np.clip(x[:, 0:2] * 2 - 1, -1, 1), atol=1e-4)
    np.testing.assert_array_equal(pred["buttons"], (x[:, 4:25] > 0.5).astype(np.float32))
    assert s.info()["old_layout"] is True


def test_missing_default_checkpoint_is_downloaded_then_loaded(golden_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, local_dir, **kwargs):  # the hub boundary only
        calls.append((repo_id, filename))
        dest = Path(local_dir) / filename
        shutil.copy(golden_dir / "tiny-a.pt", dest)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    target = tmp_path / "models" / "ng.pt"
    session = InferenceSession.from_checkpoint(target, device="cpu", options=EngineOptions(warmup=False))
    assert calls == [("nvidia/NitroGen", "ng.pt")] and target.is_file()
    assert session.info()["ckpt_path"] == str(target)
    InferenceSession.from_checkpoint(target, device="cpu", options=EngineOptions(warmup=False))
    assert len(calls) == 1  # second start reuses the file


def test_failed_download_says_which_file_to_put_where(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: offline())
    target = tmp_path / "models" / "ng.pt"
    with pytest.raises(CheckpointError) as err:
        InferenceSession.from_checkpoint(target, device="cpu")
    assert "ng.pt" in str(err.value) and str(target.resolve()) in str(err.value)
    assert "network is unreachable" in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        InferenceSession.from_checkpoint(tmp_path / "other.pt", device="cpu")


@pytest.mark.parametrize("width, height", [(160, 144), (240, 160), (256, 224), (320, 240), (640, 480),
                                           (1920, 1080), (100, 300), (256, 256)])
def test_device_resize_equals_pillow_on_noise(width, height):
    """The resize CUDA runs (here on CPU tensors) gives Pillow's uint8 frame exactly, noise included."""
    import torch

    from nitrogen.preprocess import ExactResize, resize_rgb

    noisy = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    got = ExactResize(256, torch.device("cpu"))(torch.from_numpy(noisy)).numpy()
    np.testing.assert_array_equal(got, resize_rgb(noisy, 256))


def test_gpu_preprocess_on_cpu_reproduces_tiny_c_pixel_path(golden_dir, golden):
    """gpu_preprocess is honoured on CPU: the same engine code CUDA runs gives tiny-c's exact actions."""
    g = np.load(golden_dir / "tiny-c.npz")
    session = InferenceSession.from_checkpoint(
        golden_dir / "tiny-c.pt", device="cpu", game=str(g["game"]), context_length=int(g["context_length"]),
        options=EngineOptions(warmup=False, gpu_preprocess=True))
    assert session.engine.resize_on_device
    for i in range(int(g["n_steps"])):
        got = session.predict_raw(g[f"image_{i}"], seed=int(g["seed"]) + i)
        np.testing.assert_allclose(got, g[f"action_tensor_{i}"], atol=1e-4, rtol=0)
    session.engine.close()


def test_device_resize_of_a_batch_equals_pillow_frame_by_frame():
    """Frames of one size are resized together (one matmul per pass): each still equals Pillow's."""
    import torch

    from nitrogen.preprocess import ExactResize, resize_rgb

    frames = np.random.default_rng(7).integers(0, 256, (3, 1080, 1920, 3), dtype=np.uint8)
    got = ExactResize(256, torch.device("cpu"))(torch.from_numpy(frames)).numpy()
    assert got.shape == (3, 256, 256, 3)
    for frame, out in zip(frames, got):
        np.testing.assert_array_equal(out, resize_rgb(frame, 256))


def test_gpu_preprocess_batch_of_mixed_frame_sizes_equals_pillow_path(golden_dir):
    """tiny-c's five frame sizes in ONE batch, two frames of one size apart (grouping must reorder them):
    resized by size on the device, each session's actions equal the Pillow path's."""
    from collections import Counter

    g = np.load(golden_dir / "tiny-c.npz")
    images = [g[f"image_{i}"] for i in range(int(g["n_steps"]))]
    images.insert(2, images[0][::-1].copy())  # 160x144 again, after a 240x160 frame
    results = {}
    for on_device in (True, False):
        engine = InferenceEngine.from_checkpoint(
            golden_dir / "tiny-c.pt", device="cpu",
            options=EngineOptions(warmup=False, gpu_preprocess=on_device, max_batch=8, max_wait_ms=1000))
        sessions = [InferenceSession(engine, game=str(g["game"])) for _ in images]
        futures = [s.submit_raw(im, seed=i) for i, (s, im) in enumerate(zip(sessions, images))]
        results[on_device] = [f.result() for f in futures]
        assert engine.batch_sizes == Counter({len(images): 1}), f"not one batch: {engine.batch_sizes}"
        engine.close()
    for device_path, pillow_path in zip(results[True], results[False]):
        np.testing.assert_array_equal(device_path, pillow_path)


def test_frames_reach_the_tower_as_contiguous_nchw():
    """As the original's processor hands them: a channels-last view takes another bf16 patch-conv kernel
    (1.1e-3 off the original's vectors on AVX2 CPUs)."""
    import torch

    from nitrogen.preprocess import normalize

    x = normalize(torch.zeros((2, 256, 256, 3), dtype=torch.uint8))
    assert x.shape == (2, 3, 256, 256) and x.is_contiguous()
