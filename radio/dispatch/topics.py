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


def node_subscriptions(site: str, zone: str, node: str) -> list[str]:
    """What a node subscribes to: the site's, its zone's and its own command topics."""
    return [cmd_all(site), cmd_zone(site, zone), cmd_node(site, node)]


def service_subscriptions(site: str) -> list[str]:
    return [f"{root(site)}/evt/+", f"{root(site)}/state/+"]


def node_of(topic: str) -> str | None:
    """The node id at the end of a state or event topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "radio" and parts[3] in ("evt", "state"):
        return parts[4]
    return None
