"""The script's embedded JSON decoder, run in lua5.4, against Python's json module on edge cases."""

from __future__ import annotations

import json
import math

VALID = [
    '{"a":[1,[2,[3,{"b":[]}]]],"c":{"d":{"e":null}}}',  # nesting
    '[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]',
    "[-1, -0, -0.5, -123.456, -1e-3, -2E+2]",  # negatives
    "[0, 0.25, 123.456, 3.14159265358979, 1.0, 10.5000]",  # decimals
    "[1e3, 1E+3, 2.5e-4, -1.5E2, 6.02e23, 1e-300, 0e0]",  # exponents
    r'["\"\\\/\b\f\n\r\t", "\u00e9\u20ac", "\ud83d\ude00", "a\u0000b", "\u0041\u00DF"]',  # escapes
    '"caf\u00e9 \u2603 raw utf-8"',
    '  \r\n\t{ "k" :\n [ true , false , null ] }  ',  # whitespace everywhere
    "[1,null,3,null]",  # null keeps array positions
    '{"x":1,"x":2}',  # last duplicate wins, as in Python
    "9007199254740993",  # fits a Lua integer exactly
    (
        '{"status":"ok","pred":{"j_left":[[-1.0,0.5],[0.1234,-0.9999]],"j_right":[[0,0],[1,-1]],'
        '"buttons":[[0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0],'
        "[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1]]},"
        '"repeat":2}'
    ),
    '{"status":"error","message":"bad resize_mode \'x\': expected one of pad, crop, stretch"}',
    '""',
    "[]",
    "{}",
]

INVALID = [
    "",
    "   ",
    "[1,]",
    "[1 2]",
    '{"a" 1}',
    '{"a":1,}',
    "{1:2}",
    "01",
    "-01",
    "1.",
    ".5",
    "1e",
    "1e+",
    "+1",
    "-",
    '"abc',
    r'"\x"',
    r'"\u12G4"',
    "[1] x",
    "tru",
    "nul",
    "[",
    '{"a":',
    '"a\nb"',
    '"tab\there"',
    "[" * 300 + "]" * 300,
]


def normalise(v):
    """Lua tables cannot tell [] from {}: compare both as empty containers."""
    if isinstance(v, (list, dict)) and not v:
        return "<empty>"
    if isinstance(v, list):
        return [normalise(x) for x in v]
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items()}
    return v


def decode_all(lua_eval, texts: list[str]) -> list[dict]:
    cases = ", ".join(f'"{t.encode().hex()}"' for t in texts)
    return lua_eval(f"""
        for _, h in ipairs({{{cases}}}) do
          local ok, v = pcall(M.json.decode, unhex(h))
          if ok then emit({{ok = true, value = v, type = math.type(v)}})
          else emit({{ok = false, error = v}}) end
        end""")


def test_decodes_what_python_decodes(lua_eval):
    results = decode_all(lua_eval, VALID)
    for text, got in zip(VALID, results, strict=True):
        assert got["ok"], f"{text!r}: {got}"
        assert normalise(got.get("value")) == normalise(json.loads(text)), text


def test_number_types_and_values(lua_eval):
    texts = ["42", "-7", "4.0", "1e2", "-2.5E-3", "9007199254740993", "12345678901234567890123"]
    got = decode_all(lua_eval, texts)
    assert [g["type"] for g in got] == ["integer", "integer", "float", "float", "float", "integer", "float"]
    assert [g["value"] for g in got] == [42, -7, 4.0, 100.0, -0.0025, 9007199254740993, 1.2345678901234568e22]


def test_escapes_become_utf8(lua_eval):
    got = decode_all(lua_eval, [r'"\ud83d\ude00"', r'"\u00e9"', r'"\ud800x"', r'"\/\\\""'])
    assert [g["value"] for g in got] == ["\U0001f600", "\u00e9", "\ufffdx", '/\\"']


def test_null_is_a_sentinel_not_a_hole(lua_eval):
    out = lua_eval("""
        local t = M.json.decode('[1,null,3]')
        emit({n = #t, null_is_sentinel = t[2] == M.json.null, last = t[3]})""")
    assert out == [{"n": 3, "null_is_sentinel": True, "last": 3}]


def test_rejects_malformed_json_with_a_position(lua_eval):
    for text, got in zip(INVALID, decode_all(lua_eval, INVALID), strict=True):
        assert not got["ok"], f"{text[:40]!r} was accepted: {got}"
        assert got["error"].startswith("invalid JSON at byte "), got["error"]


def test_long_reply_round_trip(lua_eval):
    rows = 18
    reply = {
        "status": "ok",
        "repeat": 3,
        "pred": {
            "j_left": [[round(math.sin(i), 4), round(-math.cos(i), 4)] for i in range(rows)],
            "j_right": [[-1.0, 1.0]] * rows,
            "buttons": [[(i + j) % 2 for j in range(21)] for i in range(rows)],
        },
    }
    got = decode_all(lua_eval, [json.dumps(reply)])[0]
    assert got["ok"] and got["value"] == reply
