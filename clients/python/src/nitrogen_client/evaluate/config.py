"""The run's settings (one pydantic model, so a bad value is refused naming the option) and the seeds.

Every seed comes from ``--seed``, the env id and the episode index, never from which worker ran the
episode or when: a run with the same settings asks the same questions, whatever ``--envs`` is. The
answers can still differ in the last float bits: the server batches rows from all workers, and a
GEMM's rounding may depend on the batch's size and make-up (identical in every run measured here, on
CPU, for 1, 2, 4 and 8 envs; a GPU or another CPU may differ, and a press at 0.5 can then flip).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SEED_LIMIT = 2**31  # env and predict seeds stay below this (every backend and torch accept them)


class EvalConfig(BaseModel):
    """What ``nitrogen-eval`` runs; field names are the CLI's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env_ids: list[str] = Field(min_length=1)
    host: str = "localhost"
    port: int = Field(5555, ge=1, le=65535)
    protocol: Literal["auto", "zmq", "tcp"] = "auto"
    envs: int = Field(1, ge=1, le=256)
    episodes: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    frames_per_action: int | None = Field(None, ge=1)
    actions_per_predict: int | None = Field(None, ge=1)
    out: Path
    video: bool = False
    video_height: int = Field(480, ge=64, le=2160)
    allow_menu: bool = False
    timeout_s: float = Field(30.0, gt=0)


def episode_seeds(seed: int, env_id: str, episode: int) -> tuple[int, int]:
    """(env seed, first predict seed) of one episode; predict k of it uses first + k (mod 2**31)."""
    state = np.random.SeedSequence([seed, zlib.crc32(env_id.encode()), episode]).generate_state(2)
    return int(state[0]) % SEED_LIMIT, int(state[1]) % SEED_LIMIT


def predict_seed(first: int, k: int) -> int:
    return (first + k) % SEED_LIMIT
