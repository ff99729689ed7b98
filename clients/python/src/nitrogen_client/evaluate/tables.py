"""The pad -> game tables as Markdown, from the maps the backends use (``nitrogen-eval --maps``); the
README's copy is this output, and a test keeps the two equal."""

from __future__ import annotations

from .atari import ATARI_MAP
from .consoles import RETRO_CONSOLES
from .doom import DOOM_DELTAS, DOOM_MAP
from .padmap import STICK_DEADZONE, PadMap, console_data, console_map


def _table(header: tuple[str, str], pad_map: PadMap) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| `{name}` | {' or '.join(f'`{i}`' for i in inputs)} |" for name, inputs in pad_map.buttons.items()]
    if pad_map.opposites:
        pairs = ", ".join(f"`{a}`+`{b}`" for a, b in pad_map.opposites)
        lines.append(f"| cancel out | {pairs} |")
    return lines


def _retro_rows() -> list[str]:
    aliases = console_data()["aliases"]
    by_map: dict[str, list[str]] = {}
    for system, console in RETRO_CONSOLES.items():
        by_map.setdefault(aliases.get(console, console), []).append(system)
    lines = ["| stable-retro systems | Lua map | button ← pad inputs (any) |", "|---|---|---|"]
    for console, systems in by_map.items():
        pad_map = console_map(console)
        cells = " · ".join(f"{name.upper()} ← {' or '.join(inputs)}" for name, inputs in pad_map.buttons.items())
        lines.append(f"| {', '.join(systems)} | `{console}` | {cells} |")
    return lines


def markdown_tables() -> str:
    """The three tables with one line of rules each (what README's "Evaluate on real games" shows)."""
    deltas = " · ".join(f"`{name}` = `{stick}[{axis}]` × {scale:g}" for name, (stick, axis, scale)
                        in DOOM_DELTAS.items())
    parts = [
        (f"Pad inputs: the model's 21 buttons (pressed above 0.5) and `LS_*`/`RS_*`, the left/right stick "
         f"past the dead-zone ({STICK_DEADZONE:g}; model y points down). START/BACK count only with "
         "`--allow-menu`. A game button is pressed when any of its inputs is; a pair that cancels out is "
         "released when both are pressed."),
        "",
        ("**ALE** (full action space): the action is the one of the 18 named "
         "`[UP|DOWN][RIGHT|LEFT][FIRE]` (`NOOP` when none)."),
        "",
        *_table(("part", "pad inputs"), ATARI_MAP),
        "",
        ("**stable-retro**: the Lua clients' console maps (`core.MAPS` in `clients/lua/nitrogen_core.lua`, "
         "exported to `nitrogen_client/evaluate/console_maps.json`); opposite d-pad directions cancel out."),
        "",
        *_retro_rows(),
        "",
        ("**ViZDoom**: only the buttons the scenario declares are sent; declared buttons not listed here "
         f"are never pressed. Delta buttons: {deltas}."),
        "",
        *_table(("button", "pad inputs"), DOOM_MAP),
    ]
    return "\n".join(parts) + "\n"
