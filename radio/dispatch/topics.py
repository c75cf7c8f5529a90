"""Every MQTT topic string of protocol v1, in one place (see docs/protocol.md)."""

from __future__ import annotations

PROTOCOL_VERSION = 1


def root(site: str) -> str:
    return f"radio/v{PROTOCOL_VERSION}/{site}"


def cmd_all(site: str) -> str:
    """Commands for every node of the site (the whole ward)."""
    return f"{root(site)}/cmd/all"


def cmd_zone(site: str, zone: str) -> str:
    return f"{root(site)}/cmd/zone/{zone}"


def cmd_node(site: str, node: str) -> str:
    return f"{root(site)}/cmd/node/{node}"


def state(site: str, node: str) -> str:
    """Retained online/offline state of one node; its Last Will lands here too."""
    return f"{root(site)}/state/{node}"


def event(site: str, node: str) -> str:
    """Execution events of one node (received, ready, started, finished, failed...)."""
    return f"{root(site)}/evt/{node}"


def heartbeat(site: str, node: str) -> str:
    """Periodic heartbeat of one node (volume, what plays, link quality); QoS 0, not retained."""
    return f"{root(site)}/hb/{node}"


def clock_request(site: str, node: str) -> str:
    """A node's clock-sync request (NTP-style, carries t0); the service answers on clock_reply."""
    return f"{root(site)}/clock/{node}"


def clock_reply(site: str, node: str) -> str:
    return f"{root(site)}/clock/{node}/reply"


def node_subscriptions(site: str, zone: str, node: str) -> list[str]:
    """What a node subscribes to: the site's, its zone's and its own command topics."""
    return [cmd_all(site), cmd_zone(site, zone), cmd_node(site, node)]


def node_inbox(site: str, zone: str, node: str) -> list[str]:
    """Every topic a node subscribes to: its command topics plus its own clock replies."""
    return [*node_subscriptions(site, zone, node), clock_reply(site, node)]


def service_subscriptions(site: str) -> list[str]:
    # clock/+ matches requests (clock/<node>) but not replies (clock/<node>/reply): one level only.
    return [f"{root(site)}/evt/+", f"{root(site)}/state/+", f"{root(site)}/hb/+", f"{root(site)}/clock/+"]


def kind_of(topic: str) -> str | None:
    """``evt``, ``state``, ``hb`` or ``clock`` for a node → server topic of protocol v1, else None."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "radio" and parts[1] == f"v{PROTOCOL_VERSION}" and \
            parts[3] in ("evt", "state", "hb", "clock"):
        return parts[3]
    return None


def node_of(topic: str) -> str | None:
    """The node id at the end of a node → server topic (state, event, heartbeat, clock request), else None."""
    return topic.split("/")[4] if kind_of(topic) is not None else None
