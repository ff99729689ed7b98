"""The pad -> game mapping as README's "Evaluate on real games" documents it, re-implemented from the
text alone, so the tests check what was played against what users read (not against the code)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from conftest import REPO

BUTTONS = ("BACK", "DPAD_DOWN", "DPAD_LEFT", "DPAD_RIGHT", "DPAD_UP", "EAST", "GUIDE", "LEFT_SHOULDER",
           "LEFT_THUMB", "LEFT_TRIGGER", "NORTH", "RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT", "RIGHT_SHOULDER",
           "RIGHT_THUMB", "RIGHT_TRIGGER", "RIGHT_UP", "SOUTH", "START", "WEST")  # docs/protocol.md order


def section() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"## Evaluate on real games\n(.*?)\n## ", text, re.DOTALL)
    assert found, "README has no 'Evaluate on real games' section"
    return found.group(1)


@dataclass
class DocMap:
    buttons: dict[str, list[str]]
    opposites: list[tuple[str, str]]

    def press(self, inputs: set[str]) -> set[str]:
        on = {b for b, wanted in self.buttons.items() if inputs & set(wanted)}
        for a, b in self.opposites:
            if {a, b} <= on:
                on -= {a, b}
        return on


def _table_after(text: str, heading: str) -> DocMap:
    block = text.split(heading, 1)[1].split("\n\n", 2)[1]
    buttons, opposites = {}, []
    for line in block.splitlines()[2:]:
        name, cell = (c.strip() for c in line.strip("|").split("|"))
        if name == "cancel out":
            opposites = re.findall(r"`(\w+)`\+`(\w+)`", cell)
        else:
            buttons[name.strip("`")] = re.findall(r"`(\w+)`", cell)
    return DocMap(buttons, opposites)


def documented() -> dict[str, Any]:
    """{"deadzone", "ale": DocMap, "doom": DocMap, "retro": {system: DocMap}} from the README."""
    text = section()
    deadzone = float(re.search(r"past the dead-zone \(([\d.]+);", text).group(1))
    retro = {}
    for line in text.split("**stable-retro**", 1)[1].split("\n\n", 2)[1].splitlines()[2:]:
        systems, _, cell = (c.strip() for c in line.strip("|").split("|"))
        buttons = {name: inputs.split(" or ") for name, inputs in
                   (item.split(" ← ") for item in cell.split(" · "))}
        for system in systems.split(", "):
            retro[system] = DocMap(buttons, [("UP", "DOWN"), ("LEFT", "RIGHT")])
    return {"deadzone": deadzone, "ale": _table_after(text, "**ALE**"), "doom": _table_after(text, "**ViZDoom**"),
            "retro": retro}


def inputs_of(j_left: list[float], j_right: list[float], buttons: list[float], deadzone: float) -> set[str]:
    """The README's rule: buttons above 0.5 (START/BACK only with --allow-menu), sticks past the dead-zone."""
    on = {n for n, v in zip(BUTTONS, buttons, strict=True) if v > 0.5} - {"START", "BACK", "GUIDE"}
    for prefix, (x, y) in (("LS", j_left), ("RS", j_right)):
        on |= {f"{prefix}_{d}" for d, past in (("LEFT", x < -deadzone), ("RIGHT", x > deadzone),
                                                ("UP", y < -deadzone), ("DOWN", y > deadzone)) if past}
    return on


def expected_action(docs: dict[str, Any], backend: str, labels: list[str], j_left: list[float],
                    j_right: list[float], buttons: list[float], system: str = "") -> Any:
    """The env action README says this model action becomes (as nitrogen-eval logs it)."""
    inputs = inputs_of(j_left, j_right, buttons, docs["deadzone"])
    if backend == "ALE":
        on = docs["ale"].press(inputs)
        name = "".join(p for p in ("UP", "DOWN", "RIGHT", "LEFT", "FIRE") if p in on) or "NOOP"
        return labels.index(name)
    if backend == "stable-retro":
        on = docs["retro"][system].press(inputs)
        return [int(label in on) for label in labels]
    on = docs["doom"].press(inputs)
    return [int(label in on) for label in labels]
