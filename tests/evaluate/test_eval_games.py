"""nitrogen-eval on three real games (Atari Breakout, Airstriker on the Genesis, ViZDoom's Defend the
Center) against the golden tiny-a server: repeatable, played as documented, videos complete."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import predict_lines, results, run_eval
from readme_maps import documented, expected_action

ENV_IDS = ["ALE/Breakout-v5", "Airstriker-Genesis-v0", "VizdoomDefendCenter-MultiBinary-v1"]
MAX_STEPS = 300


@pytest.fixture(scope="module")
def runs(golden_server, tmp_path_factory) -> list[Path]:
    """The same run twice (seed 11, over ZeroMQ, each action held 2 steps): first the three games at once
    with videos, then one after the other in one worker, without."""
    outs = []
    for video, envs in ((True, "3"), (False, "1")):
        out = tmp_path_factory.mktemp("eval")
        proc = run_eval(*ENV_IDS, "--host", "127.0.0.1", "--port", str(golden_server.zmq_port), "--envs", envs,
                        "--max-steps", str(MAX_STEPS), "--frames-per-action", "2", "--seed", "11",
                        "--out", str(out), *(["--video", "--video-height", "240"] if video else []))
        assert proc.returncode == 0, proc.stderr[-4000:]
        outs.append(out)
    return outs


def test_every_game_ran_a_few_hundred_steps(runs):
    doc = results(runs[0])
    assert [r["env_id"] for r in doc["episodes"]] == ENV_IDS
    for row in doc["episodes"]:
        assert 100 <= row["length"] <= MAX_STEPS, row
        assert row["predicts"] == len(predict_lines(runs[0], row)) >= 4, row
        assert all(line["frames_per_action"] == 2 for line in predict_lines(runs[0], row))
    assert doc["run"]["episodes_finished"] == 3 and not doc["run"]["errors"]
    assert doc["server"]["ckpt_path"].endswith("tiny-a.pt")


def test_same_seed_same_actions_and_returns(runs):
    """Seeds come from --seed, the env id and the episode: not from --envs, the worker or the batching."""
    first, second = (results(out)["episodes"] for out in runs)
    keys = ("env_id", "episode", "env_seed", "predict_seed", "return", "length", "predicts", "end")
    assert [{k: r[k] for k in keys} for r in first] == [{k: r[k] for k in keys} for r in second]
    for a, b in zip(first, second, strict=True):
        lines_a, lines_b = predict_lines(runs[0], a), predict_lines(runs[1], b)
        sticks = ("j_left", "j_right")
        # buttons, seeds, env actions, rewards: equal; sticks to float32 rounding (batched GEMMs may differ)
        assert [{k: v for k, v in line.items() if k not in (*sticks, "server_timing")} for line in lines_a] == [
            {k: v for k, v in line.items() if k not in (*sticks, "server_timing")} for line in lines_b], a["env_id"]
        for key in sticks:
            np.testing.assert_allclose([ln[key] for ln in lines_a], [ln[key] for ln in lines_b], atol=1e-5, rtol=0)


def test_env_actions_are_the_documented_mapping(runs):
    """Every env action logged equals README's mapping of the model action logged beside it."""
    docs, doc = documented(), results(runs[0])
    for row in doc["episodes"]:
        env = doc["envs"][row["env_id"]]
        system = row["env_id"].split("-")[-2] if env["backend"] == "stable-retro" else ""
        played = 0
        for line in predict_lines(runs[0], row):
            assert len(line["j_left"]) == len(line["j_right"]) == len(line["buttons"]) == 16
            for i, logged in enumerate(line["env_actions"]):
                want = expected_action(docs, env["backend"], env["actions"], line["j_left"][i], line["j_right"][i],
                                       line["buttons"][i], system)
                assert logged == want, (row["env_id"], line["predict"], i)
            played += len(line["env_actions"]) * line["frames_per_action"]
        # every env step was an action from the log (the last one may be cut short by the episode's end)
        assert played - line["frames_per_action"] < row["length"] <= played
        distinct = {json.dumps(a) for ln in predict_lines(runs[0], row) for a in ln["env_actions"]}
        assert len(distinct) > 1, f"{row['env_id']}: one action all along"


def test_videos_decode_to_one_frame_per_step(runs):
    for row in results(runs[0])["episodes"]:
        with av.open(str(runs[0] / row["video"])) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == row["length"], row["env_id"]
        assert frames[0].shape[0] == 240 and frames[0].shape[1] > 500, frames[0].shape
        assert frames[0][:, : frames[0].shape[1] - 500].std() > 5, "the game frame is not blank"
    assert not results(runs[1])["episodes"][0]["video"]


def test_results_summary_and_csv(runs):
    doc = results(runs[0])
    with (runs[0] / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["env_id"], float(r["return"]), int(r["length"])) for r in rows] == [
        (r["env_id"], r["return"], r["length"]) for r in doc["episodes"]]
    for env_id in ENV_IDS:
        summary, ret = doc["envs"][env_id], [r["return"] for r in doc["episodes"] if r["env_id"] == env_id]
        assert (summary["mean_return"], summary["min_return"], summary["max_return"]) == (ret[0], ret[0], ret[0])
        assert summary["episodes"] == 1 and summary["actions"]
    assert doc["envs"]["ALE/Breakout-v5"]["actions"][14] == "UPRIGHTFIRE"
    assert doc["envs"]["Airstriker-Genesis-v0"]["actions"] == ["B", "A", "MODE", "START", "UP", "DOWN", "LEFT",
                                                               "RIGHT", "C", "Y", "X", "Z"]
