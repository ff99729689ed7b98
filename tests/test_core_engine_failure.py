"""An engine whose device is lost fails what it holds and refuses the rest; an ordinary error does not.

A CPU cannot lose its device, so the batch raises what CUDA raises for a poisoned context
(``torch.AcceleratorError``), through the engine's own ``run_batch``; the rest is the real engine.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from nitrogen import InferenceSession
from nitrogen.errors import EngineFailedError
from nitrogen.options import EngineOptions


@pytest.fixture
def session(golden_dir):
    s = InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu",
                                         options=EngineOptions(warmup=False, max_wait_ms=50))
    yield s
    s.engine.close()


def test_an_ordinary_batch_error_is_that_batch_alone(session, golden) -> None:
    g = golden("tiny-a")
    engine, real = session.engine, session.engine.run_batch
    engine.run_batch = lambda jobs: (_ for _ in ()).throw(RuntimeError("CUDA out of memory (simulated)"))
    with pytest.raises(RuntimeError, match="inference failed: CUDA out of memory"):
        session.predict_raw(g["image_0"], seed=int(g["seed"]))
    engine.run_batch = real
    assert engine.healthy and engine.failure is None
    got = session.predict_raw(g["image_0"], seed=int(g["seed"]))
    np.testing.assert_allclose(got, g["action_tensor_0"], atol=1e-4, rtol=0)


def test_a_lost_device_fails_every_waiting_and_later_predict(session, golden) -> None:
    g = golden("tiny-a")
    engine = session.engine
    heard: list[str] = []
    engine.add_failure_listener(heard.append)
    release = threading.Event()

    def lost(jobs):
        release.wait(10)  # hold the worker so that more jobs queue behind this batch
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    engine.run_batch = lost
    others = [InferenceSession(engine) for _ in range(3)]
    first = session.submit(g["image_0"], seed=1)
    queued = [s.submit(g["image_0"], seed=2 + i) for i, s in enumerate(others)]
    release.set()
    for future in (first, *queued):
        with pytest.raises(EngineFailedError, match=r"engine 0 \(cpu\) is out of service: .*illegal memory access"):
            future.result(timeout=30)
    assert not engine.healthy
    assert len(heard) == 1 and "restart the server" in heard[0]
    with pytest.raises(EngineFailedError, match="out of service"):
        session.submit(g["image_0"], seed=9)
