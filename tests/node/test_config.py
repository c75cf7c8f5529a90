"""Node configuration: a TOML or INI file, then RADIO_NODE_* variables, then flags; bad values named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from radio.errors import InvalidInput
from radio.node.config import load_node_config


def test_toml_file_then_environment_then_flags(tmp_path: Path) -> None:
    """Each later source overrides the earlier one, key by key."""
    path = tmp_path / "node.toml"
    path.write_text('[node]\nid = "loa-1"\nzone = "tdp-1"\nbroker = "mqtt://10.8.0.1:1883"\nvolume = 60\n'
                    'cache_max_mb = 2\nplayer = "null"\n')
    config = load_node_config(path, env={"RADIO_NODE_VOLUME": "70", "RADIO_NODE_HEARTBEAT_S": "10"}, zone="tdp-2")
    assert (config.node_id, config.zone_id, config.volume, config.heartbeat_s) == ("loa-1", "tdp-2", 70, 10.0)
    assert (config.broker.host, config.broker.port) == ("10.8.0.1", 1883)
    assert config.cache_max_bytes == 2 * 1024 * 1024 and config.player == "null"


def test_ini_file_and_environment_only(tmp_path: Path) -> None:
    """An INI file's [node] section takes the same keys; with no file, the environment alone is enough."""
    path = tmp_path / "node.ini"
    path.write_text("[node]\nid = loa-2\nzone = tdp-3\noutput_latency_ms = 80\n")
    assert load_node_config(path, env={}).output_latency_s == pytest.approx(0.08)
    config = load_node_config(None, env={"RADIO_NODE_ID": "loa-3", "RADIO_NODE_ZONE": "tdp-4",
                                         "RADIO_NODE_CACHE_DIR": str(tmp_path / "c")})
    assert config.node_id == "loa-3" and config.cache_dir == tmp_path / "c"


@pytest.mark.parametrize(("env", "where"), [
    ({"RADIO_NODE_ZONE": "z"}, "node.id"),
    ({"RADIO_NODE_ID": "a", "RADIO_NODE_ZONE": "z", "RADIO_NODE_VOLUME": "300"}, "node.volume"),
    ({"RADIO_NODE_ID": "a", "RADIO_NODE_ZONE": "z", "RADIO_NODE_PLAYER": "gramophone"}, "node.player"),
    ({"RADIO_NODE_ID": "a", "RADIO_NODE_ZONE": "z", "RADIO_NODE_BROKER": "http://x"}, "node.broker"),
])
def test_bad_values_are_refused_naming_the_key(env: dict[str, str], where: str) -> None:
    """A missing id, an out-of-range volume, an unknown player or a non-MQTT URL is an InvalidInput at its key."""
    with pytest.raises(InvalidInput) as err:
        load_node_config(None, env=env)
    assert err.value.where == where


def test_unknown_keys_and_broken_files_are_errors(tmp_path: Path) -> None:
    """A typo in the file is reported rather than silently ignored; so is a file that is not TOML."""
    typo = tmp_path / "typo.toml"
    typo.write_text('id = "a"\nzone = "z"\nvolumme = 3\n')
    with pytest.raises(InvalidInput, match="volumme"):
        load_node_config(typo, env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("id = \n")
    with pytest.raises(InvalidInput):
        load_node_config(broken, env={})
