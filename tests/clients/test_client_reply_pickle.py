"""A hostile 'server' cannot crash or take over the ZeroMQ client through its reply pickle."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from client_testkit import REPO
from nitrogen_client.errors import ProtocolError
from nitrogen_client.zmq_client import loads_reply

PRED = {"j_left": np.arange(8, dtype=np.float32).reshape(4, 2), "buttons": np.eye(4, 21, dtype=np.float32)}

# An object dtype over 24 raw bytes: numpy's own unpickling builds it and the process dies (SIGSEGV).
OBJECT_DTYPE_ARRAY = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
    b"(K\x01K\x03\x85cnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R"
    b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x01tb\x89C\x18" + b"A" * 24 + b"tb."
)
# A plain dtype given a state numpy never writes (flags=1): also refused, before numpy sees it.
FLAGGED_DTYPE = (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00u8\x89\x88\x87R"
                 b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x01tb.")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_default_pickles_and_plain_data_round_trip(protocol):
    reply = {"status": "ok", "pred": PRED, "server_timing": {"queue_ms": 1.5}, "n": np.float32(2.5)}
    got = loads_reply(pickle.dumps(reply, protocol=protocol))
    for key, arr in PRED.items():
        np.testing.assert_array_equal(got["pred"][key], arr)
        assert got["pred"][key].dtype == arr.dtype and got["pred"][key].flags.writeable
    assert got["server_timing"] == {"queue_ms": 1.5} and got["n"] == np.float32(2.5)


@pytest.mark.parametrize("payload, expected", [
    (OBJECT_DTYPE_ARRAY, "dtype 'O8'"),
    (FLAGGED_DTYPE, "state"),
    (pickle.dumps({"x": np.zeros(3, dtype=[("a", "f4")])}), "dtype"),
    (pickle.dumps({"x": np.array(["a"], dtype=object)}), "dtype"),
    (b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R.", "os.system"),
])
def test_hostile_replies_are_refused_in_a_process_that_survives(payload, expected):
    """Run in a child: a crash there fails the test instead of killing the test run."""
    code = textwrap.dedent(f"""
        from nitrogen_client.errors import ProtocolError
        from nitrogen_client.zmq_client import loads_reply
        try:
            loads_reply({payload!r})
        except ProtocolError as exc:
            print("refused:", exc)
        else:
            print("accepted")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "clients" / "python" / "src")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                         check=False)
    assert run.returncode == 0, f"the client process died ({run.returncode}): {run.stderr[-500:]}"
    assert run.stdout.startswith("refused:") and expected in run.stdout, run.stdout


def test_our_servers_array_encoding_is_read():
    """The server pickles arrays as numpy.ndarray(shape, dtype, bytearray) (docs/protocol.md)."""
    class Writer(pickle.Pickler):
        def reducer_override(self, obj):
            if type(obj) is np.ndarray:
                return np.ndarray, (obj.shape, obj.dtype, bytearray(obj.tobytes()))
            return NotImplemented

    import io

    buf = io.BytesIO()
    Writer(buf, protocol=3).dump({"status": "ok", "pred": PRED})
    got = loads_reply(buf.getvalue())
    np.testing.assert_array_equal(got["pred"]["buttons"], PRED["buttons"])
    with pytest.raises(ProtocolError, match="wrong size"):
        loads_reply(buf.getvalue().replace(b"\x4b\x04\x4b\x15", b"\x4b\x05\x4b\x15", 1))
