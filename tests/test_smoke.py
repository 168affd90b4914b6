from radical_edge_proto import Data, RequestReceived, ResponseReceived

from .helpers import ConnectionPair


def test_request_response_roundtrip():
    pair = ConnectionPair()
    sid = pair.connector.send_request("GET", "/sysinfo/homedir", [("accept", "application/json")], end_stream=True)
    (req,) = pair.deliver(pair.connector)
    assert req == RequestReceived(sid, "GET", "/sysinfo/homedir", ((b"accept", b"application/json"),), True)
    pair.hub.send_response(sid, 200, [("content-type", "application/json")])
    pair.hub.send_data(sid, b'{"homedir": "/home/u"}', end_stream=True)
    resp, data = pair.deliver(pair.hub)
    assert resp == ResponseReceived(sid, 200, ((b"content-type", b"application/json"),), False)
    assert data == Data(sid, b'{"homedir": "/home/u"}', True)
    pair.connector.acknowledge_received_data(sid, len(data.data))
    assert pair.connector.open_streams == ()
    assert pair.hub.open_streams == ()
