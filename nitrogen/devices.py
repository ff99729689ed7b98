"""Which device(s) to run on: ``None`` picks cuda > mps > cpu; lists name one engine per device."""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device | None) -> torch.device:
    """The device itself, or the best one available; CUDA always with its index (``cuda`` is the
    current device), since per-device calls such as ``torch.cuda.set_device`` refuse an index-less one."""
    if device is not None:
        picked = torch.device(device)
        if picked.type == "cuda" and picked.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return picked
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def parse_devices(spec: str | None) -> list[str | None]:
    """``"cuda:0,cuda:1"``, ``"cuda:all"`` (every visible GPU), ``"cpu,cpu"`` (testing), or one device.

    ``None`` or ``""`` means one engine on the best device. Each entry is checked by torch, so a typo
    fails here with torch's message naming it.
    """
    if spec is None or not spec.strip():
        return [None]
    parts = [p.strip() for p in spec.split(",")]
    if any(not p for p in parts):
        raise ValueError(f"device list {spec!r} has an empty entry; expected e.g. 'cuda:0,cuda:1'")
    out: list[str | None] = []
    for part in parts:
        if part == "cuda:all":
            count = torch.cuda.device_count()
            if count == 0:
                raise ValueError("device 'cuda:all' given, but no CUDA device is visible")
            out.extend(f"cuda:{i}" for i in range(count))
            continue
        try:
            torch.device(part)
        except RuntimeError as exc:
            raise ValueError(f"device {part!r} is not a device torch knows ({exc}); expected cpu, cuda, "
                             "cuda:N, cuda:all or mps") from None
        out.append(part)
    return out
