"""Issue 20's defects that a CPU can show: features that pin their batch, warm-up that misses buckets,
and a self-check that could not see a CUDA graph replaying nothing."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from nitrogen import InferenceEngine, InferenceSession
from nitrogen.cuda_graphs import GraphedDenoiser, bucket_key, warmup_shapes
from nitrogen.options import EngineOptions
from nitrogen.selfcheck_graphs import _batches, check_graphs, replay_matches_eager


@pytest.fixture(scope="module")
def tiny_b(golden_dir):
    engine = InferenceEngine.from_checkpoint(golden_dir / "tiny-b.pt", device="cpu",
                                             options=EngineOptions(warmup=False, max_batch=8, max_wait_ms=300))
    yield engine
    engine.close()


def test_history_features_do_not_keep_their_batch_alive(tiny_b, golden) -> None:
    g = golden("tiny-b")
    sessions = [InferenceSession(tiny_b) for _ in range(4)]
    futures = [s.submit(g[f"image_{i % 3}"], seed=i) for i, s in enumerate(sessions)]
    [f.result() for f in futures]
    assert max(tiny_b.batch_sizes) >= 2, "the predicts were not batched: nothing to check"
    for s in sessions:
        feats = s._frames[-1].features
        # its own storage: one frame's (tokens, dim), not the (N, tokens, dim) batch it was computed in
        assert feats.untyped_storage().nbytes() == feats.numel() * feats.element_size()


@pytest.mark.parametrize("max_batch", [1, 4, 8, 32, 24])
def test_warmup_reaches_every_bucket_a_batch_can_need(max_batch) -> None:
    warmed = {bucket_key(n, guided) for n, guided in warmup_shapes(max_batch)}
    needed = {bucket_key(n, guided) for n in range(1, max_batch + 1) for guided in range(n + 1)}
    assert needed <= warmed, f"captured while serving: {sorted(needed - warmed)}"


class NothingReplayed:
    """A stand-in for a graph that recorded no kernels: the capture call computes, and every replay
    returns that output again (the static buffer nothing overwrites)."""

    def __init__(self, eager) -> None:
        self.eager, self.out = eager, None

    def __call__(self, inp):
        if self.out is None:
            self.out = self.eager(inp).clone()
        return self.out.clone()


def test_the_replay_check_fails_on_a_graph_that_replays_nothing(tiny_b, golden) -> None:
    g = golden("tiny-b")
    eager = partial(tiny_b.forward.denoise, num_steps=tiny_b.num_steps)
    with torch.inference_mode():
        a, b = (tiny_b.forward.prepare(jobs) for jobs in _batches(tiny_b, g, tiny_b.num_steps))
    # the old check replayed the capture's own inputs: blind to it
    blind = replay_matches_eager(NothingReplayed(eager), eager, a, a, tol=1e-4)
    assert blind.same and not blind.batches_differ
    # the new one replays another batch of the same bucket: it fails, as it must
    broken = replay_matches_eager(NothingReplayed(eager), eager, a, b, tol=1e-4)
    assert broken.batches_differ and not broken.same and broken.max_dx > 1e-2
    # and the real denoiser (padded to its bucket, run eagerly on a CPU) passes it
    real = replay_matches_eager(GraphedDenoiser(eager, capture=False, capacity=4), eager, a, b, tol=1e-4)
    assert real.same and real.batches_differ, real


def test_graph_rows_say_not_applicable_without_cuda(golden) -> None:
    rows = check_graphs([torch.device("cpu")], "float32", golden("tiny-b"), engine_for=None)
    assert rows == [("CUDA graphs", None, "not applicable (no CUDA device)")]
