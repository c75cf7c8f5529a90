"""MQTT accounts without a broker: Mosquitto-compatible hashes, the rules, the export files, the CLI."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from radio.cli import main
from radio.db import transaction
from radio.dispatch import acl, topics
from radio.dispatch.mqtt import BrokerAddress
from radio.errors import InvalidInput, NotFound
from radio.logbook import audit
from radio.models import Node, NodeCredential, Zone
from radio.settings import Settings
from tests.conftest import unavailable
from tests.security.conftest import SITE, Registry


def test_hashes_match_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """Given mosquitto_passwd's salt and iterations we write its exact line, and verify its hashes."""
    if shutil.which("mosquitto_passwd") is None:
        unavailable("mosquitto_passwd is not installed")
    pwfile = tmp_path / "pw"
    pwfile.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "loa-1", "mat-khau-bi-mat"], check=True)
    user, theirs = pwfile.read_text().strip().split(":", 1)
    _, kind, iterations, salt, _digest = theirs.split("$")
    assert (user, kind) == ("loa-1", "7")
    import base64

    assert acl.hash_password("mat-khau-bi-mat", iterations=int(iterations), salt=base64.b64decode(salt)) == theirs
    assert acl.verify_password("mat-khau-bi-mat", theirs)
    assert not acl.verify_password("mat-khau-bi-mak", theirs)


def test_hashes_are_salted_and_only_the_pbkdf2_format_verifies() -> None:
    """Two hashes of one password differ; argon2, plain text and damaged hashes never verify."""
    first, second = acl.hash_password("abc12345"), acl.hash_password("abc12345")
    assert first != second and first.startswith("$7$101$")
    assert acl.verify_password("abc12345", first) and acl.verify_password("abc12345", second)
    for bad in ("abc12345", "$6$salt$abc", "$argon2id$v=19$m=65536,t=3,p=4$abc$def", first[:-4],
                first.replace("$101$", "$0$"), first.replace("$101$", "$99999999$"), ""):
        assert not acl.verify_password("abc12345", bad), bad


@pytest.mark.parametrize(("pattern", "topic", "matches"), [
    ("a/b/c", "a/b/c", True), ("a/b/c", "a/b", False), ("a/b", "a/b/c", False), ("a/+/c", "a/x/c", True),
    ("a/+/c", "a/x/y", False), ("a/#", "a", True), ("a/#", "a/b/c", True), ("a/#", "b/a", False),
    ("+/+", "a/b", True), ("+", "a/b", False),
])
def test_topic_matching_follows_mqtt(pattern: str, topic: str, matches: bool) -> None:
    """Rule patterns match topic names as MQTT filters do."""
    assert acl.topic_matches(pattern, topic) is matches


@pytest.mark.parametrize(("rule", "subscription", "covered"), [
    ("a/b", "a/b", True), ("a/+", "a/x", True), ("a/+", "a/+", True), ("a/b", "a/+", False),
    ("a/#", "a/+/c", True), ("a/#", "a/#", True), ("a/+", "a/#", False), ("a/b", "#", False),
    ("a/b/c", "a/b", False), ("a/b", "a/b/c", False),
])
def test_a_subscription_must_stay_inside_a_read_rule(rule: str, subscription: str, covered: bool) -> None:
    """A subscription is allowed only if every topic it could match is readable (Mosquitto's check)."""
    assert acl.filter_within(rule, subscription) is covered


def test_node_rules_follow_the_protocol() -> None:
    """A node reads its command topics and clock replies; it writes its state, events, heartbeats and clock requests."""
    rules = acl.node_rules(SITE, "n1", "z1")
    reads = {r.topic for r in rules if r.reads}
    writes = {r.topic for r in rules if r.writes}
    assert reads == set(topics.node_inbox(SITE, "z1", "n1"))
    assert writes == {topics.state(SITE, "n1"), topics.event(SITE, "n1"), topics.heartbeat(SITE, "n1"),
                      topics.clock_request(SITE, "n1")}
    assert not reads & writes
    # Every topic the service subscribes to carries only node → service traffic a node can write for itself.
    for node_topic in writes:
        assert any(acl.topic_matches(f, node_topic) for f in topics.service_subscriptions(SITE))
    assert not acl.may_publish(rules, topics.cmd_node(SITE, "n1"))
    assert acl.may_publish(acl.service_rules(SITE), topics.cmd_all(SITE))
    assert not acl.may_publish(acl.service_rules(SITE), "radio/v1/other-site/cmd/all")


@pytest.mark.parametrize("bad", ["n+1", "n#", "n/1", "n 1", "n:1", "", "-n", acl.SERVICE_USER, "x" * 65])
def test_ids_that_would_break_the_acl_are_refused(bad: str) -> None:
    """A node or zone id with a wildcard, separator, space or colon, or the service's name, never reaches an ACL."""
    with pytest.raises(InvalidInput):
        acl.node_rules(SITE, bad, "z1")
    with pytest.raises(InvalidInput):
        acl.node_rules(SITE, "n1", bad)


def test_issuing_a_password_stores_only_its_hash_and_is_audited(registry: Registry) -> None:
    """A new password replaces the old hash; the audit trail says so without the password or its hash."""
    with transaction(registry.factory) as session:
        before = session.get_one(NodeCredential, "n1").password_hash
        password = acl.issue_node_password(session, "n1", actor="admin")
    with registry.factory() as session:
        after = session.get_one(NodeCredential, "n1").password_hash
        total, rows = audit.entries(session, action="node.credentials_issued", limit=10)
        assert audit.verify(session).ok
    assert after != before and password not in after and acl.verify_password(password, after)
    assert total == 4 and rows[0].actor == "admin" and rows[0].entity_id == "n1"
    assert password not in str(rows[0].after) and after not in str(rows[0].after)
    with transaction(registry.factory) as session, pytest.raises(NotFound):
        acl.issue_node_password(session, "khong-co")


def test_the_service_password_comes_from_the_setting_or_a_private_file(tmp_path: Path) -> None:
    """Without the setting a password is generated once into the data directory, readable by its owner only."""
    settings = cast(Settings, SimpleNamespace(data_dir=tmp_path / "d", mqtt_service_password=None))
    first = acl.service_password(settings)
    assert first == acl.service_password(settings) and len(first) >= 32
    path = tmp_path / "d" / acl.SERVICE_PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == first
    assert list(path.parent.iterdir()) == [path]
    configured = cast(Settings, SimpleNamespace(data_dir=tmp_path / "d", mqtt_service_password="tu-cau-hinh-123"))
    assert acl.service_password(configured) == "tu-cau-hinh-123"
    address = acl.service_address(BrokerAddress.parse("mqtt://broker:1883"), configured)
    assert (address.username, address.password) == (acl.SERVICE_USER, "tu-cau-hinh-123")
    own = BrokerAddress.parse("mqtt://other:pw@broker:1883")
    assert acl.service_address(own, configured) is own


def test_export_writes_the_registry_as_mosquitto_files(registry: Registry, tmp_path: Path) -> None:
    """The password file holds the service and every node with credentials; the ACL gives each its rules, anonymous none."""
    with transaction(registry.factory) as session:
        session.add(Zone(id="z9", name="z9"))
        session.flush()
        session.add(Node(id="n9", zone_id="z9", name="chưa có mật khẩu"))
    out = tmp_path / "out"
    with registry.factory() as session:
        result = acl.export(session, registry.settings, out)
    assert result.users == [acl.SERVICE_USER, "n1", "n2", "n3"] and result.missing == ["n9"]
    assert "kill -HUP $(pidof mosquitto)" in result.instructions and "systemctl reload mosquitto" in result.instructions
    lines = [x for x in result.passwd.read_text().splitlines() if not x.startswith("#")]
    hashes = dict(line.split(":", 1) for line in lines)
    assert set(hashes) == set(registry.passwords)
    for user, password in registry.passwords.items():
        assert acl.verify_password(password, hashes[user]), user
    text = result.acl.read_text()
    before_first_user = text.split("\nuser ", 1)[0]
    assert all(line.startswith("#") or not line for line in before_first_user.splitlines())  # anonymous: nothing
    assert f"user radio-service\ntopic readwrite radio/v1/{SITE}/#\n" in text
    assert "\n".join(["user n3", f"topic read radio/v1/{SITE}/cmd/all", f"topic read radio/v1/{SITE}/cmd/zone/z2",
                      f"topic read radio/v1/{SITE}/cmd/node/n3"]) in text
    assert "n9" not in text
    assert stat.S_IMODE(result.passwd.stat().st_mode) == 0o640
    assert sorted(p.name for p in out.iterdir()) == [acl.ACL_FILE, acl.PASSWD_FILE]  # no temporary files left


def test_cli_issues_credentials_and_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`radio node credentials` prints the password once with the node's broker URL; `radio mqtt export` writes the files."""
    from tests.conftest import DEMO

    monkeypatch.setenv("RADIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADIO_MQTT_URL", "mqtts://radio-service:bi-mat@loa.phuong.vn:8883?ca=/etc/radio/ca.pem")
    monkeypatch.delenv("RADIO_DATABASE_URL", raising=False)
    assert main(["schedule", "load", str(DEMO)]) == 0
    capsys.readouterr()
    assert main(["node", "credentials", "loa-tdp1-a"]) == 0
    out = capsys.readouterr().out.splitlines()
    password = out[1]
    assert out[3] == f"mqtts://loa-tdp1-a:{password}@loa.phuong.vn:8883" and "bi-mat" not in "".join(out)
    assert main(["node", "credentials", "khong-co"]) == 2
    assert "khong-co" in capsys.readouterr().err
    assert main(["mqtt", "export", "-o", str(tmp_path / "mq")]) == 0
    printed = capsys.readouterr().out
    assert "2 tài khoản" in printed and "systemctl reload mosquitto" in printed and "loa-tdp1-b" in printed
    passwd = (tmp_path / "mq" / acl.PASSWD_FILE).read_text()
    hashes = dict(line.split(":", 1) for line in passwd.splitlines() if not line.startswith("#"))
    assert acl.verify_password(password, hashes["loa-tdp1-a"])
    from radio.cli import build_parser, cmd_node

    assert build_parser().parse_args(["node", "--id", "loa-1", "--zone", "tdp-1"]).handler is cmd_node  # still runs a node
