"""``results.json`` and ``results.csv``: rewritten after every finished episode, so an interrupted run
(Ctrl+C, a lost server, a killed process) still leaves every episode that did finish."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path
from typing import Any

COLUMNS = ("env_id", "episode", "env_seed", "predict_seed", "return", "length", "predicts", "end", "wall_s",
           "env_s", "predict_s", "server_infer_s", "server_queue_s", "video_s", "worker", "log", "video")


def summarise(rows: list[dict[str, Any]], env_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per env id: episodes, mean/min/max return, mean length (None while it has no episode)."""
    out: dict[str, dict[str, Any]] = {}
    for env_id in env_ids:
        returns = [r["return"] for r in rows if r["env_id"] == env_id]
        lengths = [r["length"] for r in rows if r["env_id"] == env_id]
        out[env_id] = {
            "episodes": len(returns),
            "mean_return": statistics.fmean(returns) if returns else None,
            "min_return": min(returns) if returns else None,
            "max_return": max(returns) if returns else None,
            "mean_length": statistics.fmean(lengths) if lengths else None,
        }
    return out


def _replace(path: Path, text: str) -> None:
    """Write beside, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results(out: Path, rows: list[dict[str, Any]], env_ids: list[str], meta: dict[str, Any]) -> None:
    """results.json (``meta``, per-env summary, episodes) and results.csv (the episodes), sorted."""
    rows = sorted(rows, key=lambda r: (env_ids.index(r["env_id"]), r["episode"]))
    summary = summarise(rows, env_ids)
    for env_id, facts in meta.get("envs", {}).items():
        summary[env_id] = {**facts, **summary.get(env_id, {})}
    doc = {**{k: v for k, v in meta.items() if k != "envs"}, "envs": summary, "episodes": rows}
    _replace(out / "results.json", json.dumps(doc, indent=1, default=str) + "\n")
    tmp = out / "results.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "results.csv")
