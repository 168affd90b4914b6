"""The one redialer (radical_edge_tunnel.Redialer): its fatal policy, retries, resume tokens and stop."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import anyio
import pytest

from radical_edge_proto import ErrorCode, Hello, PeerRole
from radical_edge_tunnel import (
    Backoff,
    BridgeSettings,
    Carrier,
    ConnectError,
    FatalDialError,
    HandshakeError,
    InsecureFileError,
    Redialer,
    Tunnel,
    TunnelError,
    UpgradeRejectedError,
    fatal_error_for,
)

from .test_edge_service import Decision, Hub

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.01, maximum=0.05, reachable_maximum=0.02)


def redialer_for(hub: Hub, **options: object) -> Redialer:
    options.setdefault("connector", hub.connector)
    options.setdefault("backoff", FAST)
    return Redialer(role=PeerRole.EDGE, name="e1", rng=random.Random(1), **options)  # type: ignore[arg-type]


async def serve_until_closed(tunnel: Tunnel) -> None:
    await tunnel.run()


def test_the_policy_in_one_place() -> None:
    assert fatal_error_for(ConnectError("cannot connect to hub:1: Connection refused")) is None
    assert fatal_error_for(HandshakeError("replaced", ErrorCode.NAME_CONFLICT)) is None
    assert fatal_error_for(HandshakeError("busy", ErrorCode.INTERNAL_ERROR)) is None
    assert fatal_error_for(UpgradeRejectedError("HTTP 503", 503, b"", None)) is None
    for status in (401, 403):
        fatal = fatal_error_for(UpgradeRejectedError(f"HTTP {status}", status, b"", None))
        assert fatal is not None
        assert fatal.status == status
        assert "refused the credential" in str(fatal)
    version = fatal_error_for(HandshakeError("speaks 99", ErrorCode.UNSUPPORTED_VERSION), "edge e1")
    assert version is not None
    assert str(version).startswith("the bridge refused edge e1 (UNSUPPORTED_VERSION): speaks 99; this side speaks")
    token = fatal_error_for(InsecureFileError("run chmod 600 /x"))
    assert token is not None
    assert token.code == ErrorCode.UNAUTHORIZED


@pytest.mark.parametrize("code", [ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION])
async def test_a_fatal_refusal_ends_the_run_without_a_retry(code: ErrorCode) -> None:
    retried: list[TunnelError] = []
    async with anyio.create_task_group() as tg:
        hub = Hub(tg, decide=lambda hello: (False, code, "go away", 0.0))
        redialer = redialer_for(hub)
        with anyio.fail_after(5), pytest.raises(FatalDialError) as info:
            await redialer.run(serve_until_closed, on_retry=retried.append)
        tg.cancel_scope.cancel()
    assert info.value.code == code
    assert f"the bridge refused edge e1 ({code.name}): go away; " in str(info.value)
    assert len(hub.attempts) == 1
    assert not retried
    assert redialer.state == "stopped"


@pytest.mark.parametrize(("status", "fatal"), [(401, True), (403, True), (503, False), (404, False)])
async def test_a_refused_upgrade(status: int, fatal: bool) -> None:
    dials = 0

    async def refusing() -> Carrier:
        nonlocal dials
        dials += 1
        raise UpgradeRejectedError(f"refused with HTTP {status}", status, b"", None)

    retried: list[TunnelError] = []
    redialer = Redialer(role=PeerRole.CLIENT, name="c", connector=refusing, backoff=FAST)

    def on_retry(exc: TunnelError) -> None:
        retried.append(exc)
        if len(retried) == 3:
            redialer.stop()

    with anyio.fail_after(5):
        if fatal:
            with pytest.raises(FatalDialError) as info:
                await redialer.run(serve_until_closed, on_retry=on_retry)
            assert info.value.status == status
            assert dials == 1
        else:
            await redialer.run(serve_until_closed, on_retry=on_retry)
            assert dials == 3
            assert all(isinstance(e, UpgradeRejectedError) for e in retried)


async def test_other_failures_are_retried_and_the_resume_token_is_kept() -> None:
    refusals = iter([ErrorCode.NAME_CONFLICT])

    def decide(hello: Hello) -> Decision:
        code = next(refusals, None)
        if code is not None:
            return False, code, "the old connection is still here", 0.0
        return True, ErrorCode.NO_ERROR, f"resume-{len(hub.tunnels) + 1}", 30.0

    retried: list[TunnelError] = []
    served: list[Tunnel] = []
    states: list[str] = []

    async def serve(tunnel: Tunnel) -> None:
        served.append(tunnel)
        await tunnel.run()

    async with anyio.create_task_group() as tg:
        hub = Hub(tg, decide=decide, fail_dials=1)
        redialer = redialer_for(hub, credential="tok", manifest=lambda: {"p": {"type": "p"}}, on_state=states.append)
        tg.start_soon(functools.partial(redialer.run, serve, on_retry=retried.append))
        await hub.wait_for(lambda: len(hub.tunnels) == 1)
        await hub.live.aclose()  # the bridge goes away: dialled again
        await hub.wait_for(lambda: len(hub.tunnels) == 2)
        with anyio.fail_after(5):
            while redialer.state != "connected":
                await anyio.sleep(0.01)
        redialer.stop()
        await hub.live.aclose()
        with anyio.fail_after(5):
            while redialer.state != "stopped":
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [type(e) for e in retried] == [ConnectError, HandshakeError]
    assert [h.resume_token for h in hub.hellos] == [None, None, "resume-1"]
    assert {h.credential for h in hub.hellos} == {"tok"}
    assert all(h.manifest == {"p": {"type": "p"}} for h in hub.hellos)
    assert len(served) == 2
    assert redialer.connections == 2
    assert len(hub.attempts) == 4  # one unreachable, one refused, two served; none after stop()
    assert states[:3] == ["connecting", "waiting", "connecting"]


async def test_the_bridge_ending_a_session_with_a_fatal_code_is_final() -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        redialer = redialer_for(hub)
        failure: list[BaseException] = []

        async def run() -> None:
            try:
                await redialer.run(serve_until_closed)
            except FatalDialError as exc:
                failure.append(exc)

        tg.start_soon(run)
        await hub.wait_for(lambda: len(hub.tunnels) == 1)
        await hub.live.aclose(ErrorCode.UNAUTHORIZED, "the token was revoked")
        with anyio.fail_after(5):
            while not failure:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert str(failure[0]) == "the bridge ended the connection (UNAUTHORIZED): the token was revoked"
    assert len(hub.attempts) == 1


async def test_the_token_file_is_read_again_and_refused_once_others_can_read_it(tmp_path: Path) -> None:
    token_file = tmp_path / "bridge.token"
    token_file.write_text("tok-1\n")
    token_file.chmod(0o600)
    settings = BridgeSettings.create("https://bridge.example:8000", token_file=token_file)
    assert settings.token == "tok-1"
    assert "tok-1" not in repr(settings)
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        redialer = redialer_for(hub, settings=settings)
        failure: list[FatalDialError] = []

        async def run() -> None:
            try:
                await redialer.run(serve_until_closed)
            except FatalDialError as exc:
                failure.append(exc)

        tg.start_soon(run)
        await hub.wait_for(lambda: len(hub.tunnels) == 1)
        token_file.write_text("tok-2\n")  # the bridge made a new token
        await hub.live.aclose()
        await hub.wait_for(lambda: len(hub.tunnels) == 2)
        token_file.chmod(0o644)
        await hub.live.aclose()
        with anyio.fail_after(5):
            while not failure:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [h.credential for h in hub.hellos] == ["tok-1", "tok-2"]
    assert f"chmod 600 {token_file}" in str(failure[0])
    assert isinstance(failure[0].cause, InsecureFileError)
    assert len(hub.attempts) == 2  # refused before dialling


async def test_stop_ends_a_wait_and_a_stop_before_run_dials_nothing() -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg, fail_dials=1000)
        redialer = redialer_for(hub, backoff=Backoff(initial=60, maximum=60))
        redialer.stop()
        with anyio.fail_after(1):
            await redialer.run(serve_until_closed)
        assert not hub.attempts
        with anyio.fail_after(5):
            async with anyio.create_task_group() as inner:
                inner.start_soon(redialer.run, serve_until_closed)
                await hub.wait_for(lambda: len(hub.attempts) == 1)
                await anyio.sleep(0.05)
                assert redialer.state == "waiting"
                redialer.stop()
        assert redialer.state == "stopped"
        assert len(hub.attempts) == 1
        tg.cancel_scope.cancel()


async def test_connect_once() -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        tunnel = await redialer_for(hub).connect()
        async with anyio.create_task_group() as inner:
            await inner.start(tunnel.run)
            assert not tunnel.closed.is_set()
            await tunnel.aclose()
        hub.decide = lambda hello: (False, ErrorCode.UNSUPPORTED_VERSION, "speaks 99", 0.0)
        with pytest.raises(FatalDialError, match="UNSUPPORTED_VERSION"):
            await redialer_for(hub).connect()
        hub.fail_dials = 1
        with pytest.raises(ConnectError):
            await redialer_for(hub).connect()
        tg.cancel_scope.cancel()
