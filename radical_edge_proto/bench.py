"""Throughput of the protocol core against a plain copy of the same bytes.

``python -m radical_edge_proto.bench [--mib 256] [--frame-kib 64]``

A connector and a hub are wired together in memory.  The connector sends
one stream of DATA under flow control; the hub decodes it, acknowledges each
chunk (returning credit) and the credit travels back.  The baseline copies the
same bytes in the same chunk sizes (one ``bytes()`` copy per chunk), in the
same run, so the ratio is comparable across machines.
"""

from __future__ import annotations

import argparse
import time

from ._connection import Connection
from ._events import Data, Limits, PeerRole, Side, Welcome


def _pair(frame_size: int) -> tuple[Connection, Connection]:
    limits = Limits(max_frame_size=frame_size)
    connector = Connection(Side.CONNECTOR, limits)
    hub = Connection(Side.HUB, limits)
    connector.send_hello(role=PeerRole.CLIENT, name="bench")
    hub.receive_data(connector.data_to_send())
    hub.accept(heartbeat_interval=30.0, resume_token="bench")
    (welcome,) = connector.receive_data(hub.data_to_send())
    assert isinstance(welcome, Welcome)
    return connector, hub


def run_core(payload: bytes, frame_size: int) -> tuple[float, int]:
    """Seconds to move ``payload`` through the core, and the bytes the hub received."""
    connector, hub = _pair(frame_size)
    view = memoryview(payload)
    total = len(payload)
    received = 0
    start = time.perf_counter()
    sid = connector.send_request("PUT", "/bench/upload")
    pos = 0
    while pos < total or received < total:
        window = connector.send_window(sid)
        if window and pos < total:
            n = min(window, total - pos)
            connector.send_data(sid, view[pos : pos + n], end_stream=pos + n == total)
            pos += n
        for event in hub.receive_data(connector.data_to_send()):
            if isinstance(event, Data):
                received += len(event.data)
                hub.acknowledge_received_data(event.stream_id, len(event.data))
        connector.receive_data(hub.data_to_send())
    return time.perf_counter() - start, received


def run_copy(payload: bytes, frame_size: int) -> float:
    """Seconds for a plain chunked copy of ``payload``."""
    view = memoryview(payload)
    start = time.perf_counter()
    for pos in range(0, len(payload), frame_size):
        bytes(view[pos : pos + frame_size])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="bytes to push, in MiB (default 256)")
    parser.add_argument("--frame-kib", type=int, default=64, help="DATA frame size in KiB (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args(argv)
    size = args.mib * 1024 * 1024
    frame = args.frame_kib * 1024
    payload = bytes(range(256)) * (size // 256)
    core = []
    for _ in range(args.repeat):
        seconds, received = run_core(payload, frame)
        if received != size:
            print(f"error: hub received {received} of {size} bytes")
            return 1
        core.append(seconds)
    copy = [run_copy(payload, frame) for _ in range(args.repeat)]
    mib = size / (1024 * 1024)
    core_rate = mib / min(core)
    copy_rate = mib / min(copy)
    print(f"payload        {args.mib} MiB in {args.frame_kib} KiB DATA frames, best of {args.repeat}")
    print(f"protocol core  {core_rate:10.1f} MiB/s  (encode + decode + credit round trips)")
    print(f"plain copy     {copy_rate:10.1f} MiB/s  (one bytes() copy per chunk)")
    print(f"ratio          {core_rate / copy_rate:10.2f}x  (target >= 0.30x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
