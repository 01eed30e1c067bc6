#!/usr/bin/env python3
"""A long-lived TCP stream for the session-sync test: connects to HOST:PORT (a lab echo
server behind a VIP), sends a deterministic byte stream in chunks at a steady pace for the
given time, checks that every byte comes back in order, then closes (a FIN each way; with
--reset, a RST once every byte came back). Prints one JSON line: {"local_port", "sent",
"received", "ok", "error", "max_gap_ms"} (max_gap_ms: the longest wait between two reads of the
echo); exits 0 only if every byte came back.

    stream_client.py --host 198.18.10.2 --port 9000 --seconds 20
"""
import argparse
import hashlib
import json
import socket
import struct
import sys
import threading
import time


def stream_bytes(n, offset=0):
    """Bytes offset..offset+n of the stream: SHA-256 in counter mode, 32 bytes a block."""
    out = bytearray()
    block = offset // 32
    skip = offset % 32
    while len(out) < n + skip:
        out += hashlib.sha256(b"sluice-stream-%d" % block).digest()
        block += 1
    return bytes(out[skip:skip + n])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--reset", action="store_true", help="end with a RST (SO_LINGER 0), not FINs")
    args = ap.parse_args()
    result = {"local_port": None, "sent": 0, "received": 0, "ok": False, "error": ""}
    try:
        s = socket.create_connection((args.host, args.port), timeout=10)
        s.settimeout(30)
        result["local_port"] = s.getsockname()[1]
        state = {"received": 0, "error": ""}

        def reader():
            last = time.monotonic()
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        return
                    if b != stream_bytes(len(b), state["received"]):
                        state["error"] = f"wrong bytes at offset {state['received']}"
                        return
                    state["received"] += len(b)
                    now = time.monotonic()
                    state["max_gap_ms"] = max(state.get("max_gap_ms", 0), round((now - last) * 1000))
                    last = now
            except OSError as e:
                state["error"] = f"receive: {e}"

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end and not state["error"]:
            s.sendall(stream_bytes(args.chunk, result["sent"]))
            result["sent"] += args.chunk
            time.sleep(args.interval)
        # Everything sent must come back before we close.
        deadline = time.monotonic() + 30
        while state["received"] < result["sent"] and time.monotonic() < deadline and not state["error"]:
            time.sleep(0.05)
        if args.reset:
            # Read before the abort: the reader then fails on the closed socket.
            got, error = state["received"], state["error"]
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        else:
            s.shutdown(socket.SHUT_WR)
            t.join(timeout=30)
            s.close()
            got, error = state["received"], state["error"]
        result["received"] = got
        result["max_gap_ms"] = state.get("max_gap_ms", 0)
        result["error"] = error
        result["ok"] = not error and got == result["sent"]
        if not result["ok"] and not result["error"]:
            result["error"] = f"{got} of {result['sent']} bytes came back"
    except OSError as e:
        result["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
