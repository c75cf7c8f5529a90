"""The node agent against a real Mosquitto and a miniature service: lifecycle, duplicates, time, faults, commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from radio.dispatch import topics
from radio.dispatch.messages import CommandType, EventType, NodeState
from radio.node.agent import Faults, NodeAgent
from radio.node.players import SimulatedPlayer
from tests.conftest import Mosquitto, free_port
from tests.node.conftest import SITE, AudioServer, FakeServer, command, node_config, start_agent

pytestmark = pytest.mark.mosquitto


def test_play_goes_through_every_step_and_starts_on_time(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """received → ready → started → finished, started within a few ms of start_at, with the real duration."""
    async def scenario() -> None:
        audio = AudioServer()
        player = SimulatedPlayer()
        async with audio.client() as http:
            node = start_agent(node_config(broker.url, tmp_path), http, player)
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=0.6, duration_s=0.3)
            server.send(cmd)
            await server.until(lambda: "finished" in server.steps(cmd.id), what="finished")
            await node.stop()
        assert server.steps(cmd.id) == ["received", "ready", "started", "finished"]
        assert cmd.start_at is not None
        (_, true_start), = player.starts
        assert abs(true_start - cmd.start_at.timestamp()) < 0.02
        started = server.event(cmd.id, "started").at
        assert abs((started - cmd.start_at).total_seconds()) < 0.02
        assert server.event(cmd.id, "finished").played_s == pytest.approx(0.3, abs=0.05)

    asyncio.run(scenario())


def test_duplicates_are_answered_and_never_play_twice_even_after_a_restart(
        broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """A repeated id is answered with the earlier state; the journal keeps that true across a node restart."""
    async def scenario() -> None:
        audio = AudioServer()
        player = SimulatedPlayer()
        config = node_config(broker.url, tmp_path)
        async with audio.client() as http:
            node = start_agent(config, http, player)
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=0.3, duration_s=0.2)
            server.send(cmd)
            server.send(cmd, topics.cmd_node(SITE, "n1"))  # a resend on the node's own topic
            await server.until(lambda: "finished" in server.steps(cmd.id), what="finished")
            await node.stop()
            node = start_agent(config, http, player)  # a new boot of the same node
            await node.agent.connected.wait()
            server.send(cmd)
            await server.until(lambda: server.steps(cmd.id).count("finished") == 2, what="the answer after restart")
            await node.stop()
        assert len(player.starts) == 1
        assert server.steps(cmd.id).count("started") == 1

    asyncio.run(scenario())


def test_stale_commands_never_play(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """A command that arrives after valid_until is answered `expired` and nothing plays."""
    async def scenario() -> None:
        player = SimulatedPlayer()
        async with AudioServer().client() as http:
            node = start_agent(node_config(broker.url, tmp_path), http, player)
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=-20, valid_s=10)
            server.send(cmd)
            await server.until(lambda: server.steps(cmd.id), what="an answer")
            await asyncio.sleep(0.2)
            await node.stop()
        assert server.steps(cmd.id) == ["expired"]
        assert player.starts == []

    asyncio.run(scenario())


class Corrupt(Faults):
    def __init__(self, times: int) -> None:
        self.times = times

    def after_download(self, data: bytes) -> bytes:
        if self.times:
            self.times -= 1
            return b"X" + data[1:]
        return data


@pytest.mark.parametrize(("bad", "outcome"), [(1, "finished"), (2, "failed")])
def test_corrupt_audio_is_fetched_again_then_failed(broker: Mosquitto, server: FakeServer, tmp_path: Path, bad: int,
                                                    outcome: str) -> None:
    """One corrupt download is re-fetched and plays; a second corrupt one fails with a sha256 reason."""
    async def scenario() -> None:
        audio = AudioServer()
        async with audio.client() as http:
            node = start_agent(node_config(broker.url, tmp_path), http, faults=Corrupt(bad))
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=0.3, duration_s=0.1)
            server.send(cmd)
            await server.until(lambda: outcome in server.steps(cmd.id), what=outcome)
            await node.stop()
        assert audio.requests == 2
        if outcome == "failed":
            assert "sha256" in (server.event(cmd.id, "failed").reason or "")
            assert "started" not in server.steps(cmd.id)

    asyncio.run(scenario())


def test_clock_three_seconds_off_still_starts_on_time(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """A node whose clock is 3 s fast estimates the offset over MQTT and starts within 20 ms of the true start_at."""
    async def scenario() -> None:
        player = SimulatedPlayer()
        async with AudioServer().client() as http:
            node = start_agent(node_config(broker.url, tmp_path, clock_skew_s=3.0), http, player)
            await node.agent.clock.synced.wait()
            assert node.agent.clock.offset_s == pytest.approx(-3.0, abs=0.01)
            cmd = command(lead_s=0.5, duration_s=0.1)
            server.send(cmd)
            await server.until(lambda: "finished" in server.steps(cmd.id), what="finished")
            await node.stop()
        assert cmd.start_at is not None
        assert abs(player.starts[0][1] - cmd.start_at.timestamp()) < 0.02
        assert abs((server.event(cmd.id, "started").at - cmd.start_at).total_seconds()) < 0.02

    asyncio.run(scenario())


def test_emergency_preempts_then_the_node_is_free(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """An emergency stops the bulletin that plays (failed: preempted), plays, and a later bulletin plays normally."""
    async def scenario() -> None:
        player = SimulatedPlayer()
        async with AudioServer().client() as http:
            node = start_agent(node_config(broker.url, tmp_path), http, player)
            await node.agent.clock.synced.wait()
            normal = command(lead_s=0.2, duration_s=5.0, broadcast_id=1)
            server.send(normal)
            await server.until(lambda: "started" in server.steps(normal.id), what="the bulletin to start")
            emergency = command(lead_s=0.2, duration_s=0.3, priority="emergency", broadcast_id=2)
            server.send(emergency)
            await server.until(lambda: "finished" in server.steps(emergency.id), what="the emergency to finish")
            low = command(lead_s=0.2, duration_s=0.2, broadcast_id=3)
            server.send(low)
            await server.until(lambda: "finished" in server.steps(low.id), what="the next bulletin")
            await node.stop()
        failed = server.event(normal.id, "failed")
        assert failed.reason and "preempted by emergency" in failed.reason
        assert failed.played_s is not None and failed.played_s < 1.5
        assert len(player.starts) == 3

    asyncio.run(scenario())


def test_lower_priority_waits_for_the_emergency_then_plays_or_expires(broker: Mosquitto, server: FakeServer,
                                                                       tmp_path: Path) -> None:
    """A bulletin due while an emergency plays starts when it ends; one whose validity runs out first expires."""
    async def scenario() -> None:
        async with AudioServer().client() as http:
            node = start_agent(node_config(broker.url, tmp_path), http)
            await node.agent.clock.synced.wait()
            emergency = command(lead_s=0.2, duration_s=1.2, priority="emergency", broadcast_id=2)
            server.send(emergency)
            await server.until(lambda: "started" in server.steps(emergency.id), what="the emergency")
            patient = command(lead_s=0.1, duration_s=0.2, broadcast_id=3)
            hasty = command(lead_s=0.1, valid_s=0.3, duration_s=0.2, broadcast_id=4)
            server.send(patient)
            server.send(hasty)
            await server.until(lambda: "finished" in server.steps(patient.id) and "expired" in server.steps(hasty.id),
                               what="the queued bulletin to play and the hasty one to expire")
            await node.stop()
        assert server.event(patient.id, "started").at >= server.event(emergency.id, "finished").at
        assert "while emergency command" in (server.event(hasty.id, "expired").reason or "")
        assert "started" not in server.steps(hasty.id)

    asyncio.run(scenario())


def test_stop_volume_sync_announce_and_relay(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """Every command type is executed and answered: stop cuts playback, volume shows in the heartbeat, relay plays."""
    async def scenario() -> None:
        player = SimulatedPlayer()
        async with AudioServer().client() as http:
            node = start_agent(node_config(broker.url, tmp_path), http, player)
            await node.agent.clock.synced.wait()
            long = command(lead_s=0.2, duration_s=10.0)
            server.send(long)
            await server.until(lambda: "started" in server.steps(long.id), what="playback")
            stop = command(CommandType.STOP, broadcast_id=None)
            server.send(stop, topics.cmd_node(SITE, "n1"))
            await server.until(lambda: "failed" in server.steps(long.id), what="the stop")
            volume = command(CommandType.VOLUME, broadcast_id=None, volume=35)
            sync = command(CommandType.SYNC, broadcast_id=None)
            announce = command(CommandType.ANNOUNCE, broadcast_id=None)
            relay = command(CommandType.RELAY, lead_s=0.2, duration_s=0.3)
            for c in (volume, sync, announce, relay):
                server.send(c, topics.cmd_node(SITE, "n1"))
            await server.until(lambda: all("finished" in server.steps(c.id) for c in (volume, sync, announce, relay)),
                               what="every command to finish")
            await server.until(lambda: server.heartbeats and server.heartbeats[-1].volume == 35, what="a heartbeat")
            await node.stop()
        assert server.steps(stop.id) == ["received", "finished"]
        assert "stopped by command" in (server.event(long.id, "failed").reason or "")
        assert player.starts[-1][0] == "http://stream.test/live" and player.volumes[-1] == 35
        assert server.event(relay.id, "finished").played_s == pytest.approx(0.3, abs=0.05)
        hb = server.heartbeats[-1]
        assert hb.clock_synced and hb.link.rtt_ms is not None and hb.player == "simulated"
        assert json.loads((tmp_path / "n1" / "state.json").read_text())["volume"] == 35

    asyncio.run(scenario())


def test_online_state_last_will_and_boot_counter(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """Online is retained; a crash leaves the Will (offline, same session); the next boot has a higher session."""
    async def scenario() -> None:
        config = node_config(broker.url, tmp_path)
        async with AudioServer().client() as http:
            node = start_agent(config, http)
            await node.agent.connected.wait()
            first = node.agent.session
            node.agent.crash()
            await node.stop()
            await server.until(lambda: any(not s.online for s in server.states), what="the Last Will")
            node = start_agent(config, http)
            await node.agent.connected.wait()
            await server.until(lambda: server.states[-1].online, what="online again")
            await node.stop()  # a clean shutdown publishes offline itself
            await server.until(lambda: not server.states[-1].online, what="the goodbye")
        will = next(s for s in server.states if not s.online)
        assert will.session == first and will.at is None  # the Will is prepared at connect time
        assert server.states[-1].session > first and server.states[-1].at is not None
        assert [s.online for s in server.states] == [True, False, True, False]

    asyncio.run(scenario())


def test_crash_mid_playback_reports_failed_and_never_replays(broker: Mosquitto, server: FakeServer,
                                                            tmp_path: Path) -> None:
    """After a crash during playback the new boot reports `failed: interrupted` and answers resends with it."""
    async def scenario() -> None:
        config = node_config(broker.url, tmp_path)
        player = SimulatedPlayer()
        async with AudioServer().client() as http:
            node = start_agent(config, http, player)
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=0.2, duration_s=5.0)
            server.send(cmd)
            await server.until(lambda: "started" in server.steps(cmd.id), what="playback")
            node.agent.crash()
            await node.stop()
            node = start_agent(config, http, player)
            await server.until(lambda: "failed" in server.steps(cmd.id), what="the interrupted report")
            server.send(cmd, topics.cmd_node(SITE, "n1"))
            await server.until(lambda: server.steps(cmd.id).count("failed") == 2, what="the answer to the resend")
            await node.stop()
        assert len(player.starts) == 1
        assert "interrupted" in (server.event(cmd.id, "failed").reason or "")

    asyncio.run(scenario())


def test_events_sent_while_the_broker_is_down_arrive_after_it_returns(tmp_path: Path) -> None:
    """A broker restart during playback loses no event: the node keeps them and sends them after reconnecting."""
    # A persistent broker keeps the service's session (and so its subscription) across the restart.
    conf = tmp_path / "mosquitto.conf"
    port = free_port()
    # user root: mosquitto started as root would otherwise drop to its own user, which cannot write in tmp_path.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
                    f"persistence_location {tmp_path}/\nmax_queued_messages 100000\n")
    broker = Mosquitto(port, conf)
    broker.start()
    server = FakeServer(broker.url)
    server.start()

    async def scenario() -> None:
        async with AudioServer().client() as http:
            node = start_agent(node_config(broker.url, tmp_path), http)
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=0.2, duration_s=1.0)
            server.send(cmd)
            await server.until(lambda: "started" in server.steps(cmd.id), what="playback")
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(1.5)  # finished happens while the broker is down
            await asyncio.to_thread(broker.start)
            await server.until(lambda: "finished" in server.steps(cmd.id), 20, what="finished after the restart")
            await node.stop()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
        broker.stop()


def test_heartbeats_and_agent_open_are_idempotent(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """Heartbeats carry session, volume and uptime at the configured period."""
    async def scenario() -> None:
        async with AudioServer().client() as http:
            agent = NodeAgent(node_config(broker.url, tmp_path, volume=55), SimulatedPlayer(), http)
            task = asyncio.create_task(agent.run())
            await server.until(lambda: len(server.heartbeats) >= 3, what="three heartbeats")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        beats = server.heartbeats[:3]
        # Periodic, not a burst: the node's own timestamps are at least one period (0.5 s) apart after the first.
        assert (beats[2].at - beats[1].at).total_seconds() >= 0.45
        assert beats[0].uptime_s < beats[1].uptime_s < beats[2].uptime_s
        assert {h.volume for h in server.heartbeats} == {55}
        assert all(h.session == agent.session for h in server.heartbeats)
        assert isinstance(server.states[0], NodeState)

    asyncio.run(scenario())


def test_events_and_states_stay_valid_on_the_wire(broker: Mosquitto, server: FakeServer, tmp_path: Path) -> None:
    """Whatever the node sends parses with the v1 schema (the fake server parses strictly) and names this node."""
    async def scenario() -> None:
        async with AudioServer().client() as http:
            node = start_agent(node_config(broker.url, tmp_path, node_id="loa-x"), http)
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=0.2, duration_s=0.1)
            server.send(cmd)
            await server.until(lambda: "finished" in server.steps(cmd.id), what="finished")
            await node.stop()
        assert {e.node for e in server.events} == {"loa-x"}
        assert server.clock.answered >= 5 and server.clock.dropped == 0
        assert EventType.FINISHED in {e.event for e in server.events}

    asyncio.run(scenario())


def test_other_nodes_retained_state_is_not_taken_for_a_command(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On the embedded broker (amqtt hands a new session every retained message, matching or not) a node acts
    only on its own topics: another node's retained state is neither a command nor a warning."""
    from radio.dispatch.broker import EmbeddedBroker
    from radio.dispatch.mqtt import BrokerAddress, MqttClient

    embedded = EmbeddedBroker("127.0.0.1", free_port())
    embedded.start()
    fake = FakeServer(embedded.url)
    fake.start()
    other = MqttClient(BrokerAddress.parse(embedded.url), "loa-khac")
    other.connect(10)
    other.publish(topics.state(SITE, "loa-khac"), NodeState(node="loa-khac", online=True, session=1).dumps(),
                  retain=True).wait_for_publish(5)

    async def scenario() -> None:
        audio = AudioServer()
        async with audio.client() as http:
            node = start_agent(node_config(embedded.url, tmp_path), http, SimulatedPlayer())
            await node.agent.clock.synced.wait()
            cmd = command(lead_s=0.6, duration_s=0.2)
            fake.send(cmd)
            await fake.until(lambda: "finished" in fake.steps(cmd.id), what="finished")
            await node.stop()

    try:
        with caplog.at_level("WARNING", logger="radio.node"):
            asyncio.run(scenario())
    finally:
        other.close()
        fake.close()
        embedded.stop()
    assert not [r for r in caplog.records if "bad command" in r.getMessage()]
