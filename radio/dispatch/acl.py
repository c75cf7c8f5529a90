"""Who may use the MQTT broker, and for what: node credentials, the service account, the access rules.

Accounts
    ``radio-service``   the service; reads and writes everything under ``radio/v1/<site>/``, and is the only
                        account that may publish commands. Its password is ``RADIO_MQTT_SERVICE_PASSWORD``, else
                        generated once into ``<data_dir>/mqtt-service.password`` (mode 0600).
    ``<node id>``       one loudspeaker cluster; a random password issued by ``radio node credentials NODE``,
                        stored only as a Mosquitto ``$7$`` PBKDF2-SHA512 hash (table ``node_credentials``).

The rules (:func:`node_rules`, :func:`service_rules`) are written once here and enforced twice: ``radio mqtt
export`` renders them as a Mosquitto ``acl_file`` (:func:`render_acl`), and the embedded broker's plugins
(radio/dispatch/broker.py) evaluate the very same :class:`Rule` objects with :func:`may_publish`,
:func:`may_receive` and :func:`may_subscribe`, which follow Mosquitto's matching.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.dispatch import topics
from radio.dispatch.mqtt import BrokerAddress
from radio.errors import InvalidInput, NotFound
from radio.logbook import audit
from radio.models import Node, NodeCredential, utcnow

if TYPE_CHECKING:
    from radio.settings import Settings

SERVICE_USER = "radio-service"
SERVICE_PASSWORD_FILE = "mqtt-service.password"
PASSWD_FILE = "mosquitto.passwd"
ACL_FILE = "mosquitto.acl"
# mosquitto_passwd 2.x writes "$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>", 12-byte salt, 101
# iterations. Our passwords are 192 random bits, so stretching adds nothing; the default keeps CONNECT cheap
# when a thousand nodes come back at once after a broker restart.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
_HASH_RE = re.compile(r"^\$7\$(\d{1,7})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$")
# What may appear in a user name and in a topic level of the ACL file: no wildcard, separator, space or colon.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Access(enum.StrEnum):
    READ = "read"  # subscribe and receive
    WRITE = "write"  # publish
    READWRITE = "readwrite"


@dataclass(frozen=True)
class Rule:
    """One line ``topic <access> <pattern>`` of a Mosquitto ACL; ``pattern`` may use ``+`` and ``#``."""

    access: Access
    topic: str

    @property
    def reads(self) -> bool:
        return self.access in (Access.READ, Access.READWRITE)

    @property
    def writes(self) -> bool:
        return self.access in (Access.WRITE, Access.READWRITE)


# the policy ---------------------------------------------------------------------------------------------
def node_rules(site: str, node: str, zone: str) -> tuple[Rule, ...]:
    """A node reads its site's, its zone's and its own commands (and its clock replies); writes only its own topics."""
    _check_name(node, "node")
    _check_name(zone, "zone")
    return (
        *(Rule(Access.READ, t) for t in topics.node_inbox(site, zone, node)),
        Rule(Access.WRITE, topics.state(site, node)),
        Rule(Access.WRITE, topics.event(site, node)),
        Rule(Access.WRITE, topics.heartbeat(site, node)),
        Rule(Access.WRITE, topics.clock_request(site, node)),
    )


def service_rules(site: str) -> tuple[Rule, ...]:
    """The service reads node reports and writes commands: everything of its site."""
    return (Rule(Access.READWRITE, f"{topics.root(site)}/#"),)


def _check_name(value: str, what: str) -> None:
    if not _NAME_RE.fullmatch(value) or value == SERVICE_USER:
        raise InvalidInput(f"{what} id {value!r} cannot be used in MQTT credentials and ACLs "
                           "(letters, digits, '.', '_', '-'; at most 64; not the service account)", where=what)


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT matching of a topic name against a filter with ``+`` and ``#`` (``a/#`` also matches ``a``)."""
    pat, top = pattern.split("/"), topic.split("/")
    for i, level in enumerate(pat):
        if level == "#":
            return True
        if i >= len(top):
            return False
        if level != "+" and level != top[i]:
            return False
    return len(pat) == len(top)


def filter_within(pattern: str, subscription: str) -> bool:
    """True if every topic the ``subscription`` filter can match is also matched by ``pattern`` (Mosquitto's rule)."""
    pat, sub = pattern.split("/"), subscription.split("/")
    for i, level in enumerate(pat):
        if level == "#":
            return True
        if i >= len(sub):
            return False
        if sub[i] == "#":
            return False  # the subscription reaches further than the rule
        if level == "+":
            continue
        if sub[i] == "+" or level != sub[i]:
            return False
    return len(pat) == len(sub)


def may_publish(rules: Iterable[Rule], topic: str) -> bool:
    return any(r.writes and topic_matches(r.topic, topic) for r in rules)


def may_receive(rules: Iterable[Rule], topic: str) -> bool:
    return any(r.reads and topic_matches(r.topic, topic) for r in rules)


def may_subscribe(rules: Iterable[Rule], subscription: str) -> bool:
    return any(r.reads and filter_within(r.topic, subscription) for r in rules)


# passwords ----------------------------------------------------------------------------------------------
def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """The hash ``mosquitto_passwd`` (2.x, sha512-pbkdf2) would write for ``password``."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Check ``password`` against a ``$7$`` hash in constant time; any other or malformed hash fails."""
    m = _HASH_RE.fullmatch(encoded)
    if m is None:
        return False
    iterations, salt, expected = int(m[1]), base64.b64decode(m[2]), base64.b64decode(m[3])
    if not 1 <= iterations <= 1_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def new_password() -> str:
    """192 random bits, URL-safe: fits a ``mqtt://node:password@host`` URL and a shell unquoted."""
    return secrets.token_urlsafe(24)


def issue_node_password(session: Session, node_id: str, *, actor: str = audit.ACTOR_CLI) -> str:
    """Give ``node_id`` a new random password (replacing any earlier one) and return it; only its hash is kept."""
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("node", node_id)
    _check_name(node.id, "node")
    _check_name(node.zone_id, "zone")
    password = new_password()
    row = session.get(NodeCredential, node_id)
    replaced = row is not None
    if row is None:
        session.add(NodeCredential(node_id=node_id, password_hash=hash_password(password), created_at=utcnow()))
    else:
        row.password_hash, row.created_at = hash_password(password), utcnow()
    audit.record(session, actor=actor, action="node.credentials_issued", entity_type="node", entity_id=node_id,
                 before={"credentials": "set"} if replaced else None, after={"credentials": "set"})
    return password


def service_password(settings: Settings) -> str:
    """The service account's password: the setting, else the one generated once into the data directory."""
    configured = getattr(settings, "mqtt_service_password", None)
    if configured:
        return str(configured)
    path: Path = settings.data_dir / SERVICE_PASSWORD_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_password() + "\n")
        try:
            os.link(tmp, path)  # never replaces: when two processes race, the first one's password stands
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def service_address(address: BrokerAddress, settings: Settings) -> BrokerAddress:
    """``address`` logged in as the service account, unless it already names a user."""
    if address.username:
        return address
    return replace(address, username=SERVICE_USER, password=service_password(settings))


def node_url(address: BrokerAddress, node_id: str, password: str) -> str:
    """The broker URL for a node's configuration: ``mqtt://NODE:PASSWORD@host:port``."""
    return f"{'mqtts' if address.tls else 'mqtt'}://{quote(node_id, safe='')}:{quote(password, safe='')}@" \
           f"{address.host}:{address.port}"


# accounts -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    """A broker login: its password hash, its rules, and the client id it must use (nodes: their own id)."""

    username: str
    password_hash: str
    rules: tuple[Rule, ...]
    client_id: str | None = None


class Accounts(Protocol):
    """Where a broker looks a login up (called on every CONNECT; may block briefly)."""

    def lookup(self, username: str) -> Account | None: ...


def service_account(settings: Settings) -> Account:
    return Account(SERVICE_USER, hash_password(service_password(settings)), service_rules(settings.site_id))


def node_account(site: str, node: Node, credential: NodeCredential) -> Account:
    return Account(node.id, credential.password_hash, node_rules(site, node.id, node.zone_id), client_id=node.id)


class RegistryAccounts:
    """Accounts read live from the node registry: a password issued while the broker runs works at once."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.site = settings.site_id
        self._service = service_account(settings)

    def lookup(self, username: str) -> Account | None:
        if username == SERVICE_USER:
            return self._service
        with self.factory() as session:
            row = session.execute(select(Node, NodeCredential).join(NodeCredential, NodeCredential.node_id == Node.id)
                                  .where(Node.id == username)).one_or_none()
            if row is None:
                return None
            try:
                return node_account(self.site, row[0], row[1])
            except InvalidInput:
                return None


class StaticAccounts:
    """A fixed set of accounts (tests, or a broker fed from an export)."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self._accounts = {a.username: a for a in accounts}

    def lookup(self, username: str) -> Account | None:
        return self._accounts.get(username)


def registered_accounts(session: Session, settings: Settings) -> tuple[list[Account], list[str]]:
    """The service plus every node with credentials, and the ids of nodes still without credentials."""
    accounts = [service_account(settings)]
    missing: list[str] = []
    credentials = {c.node_id: c for c in session.scalars(select(NodeCredential))}
    for node in session.scalars(select(Node).order_by(Node.id)):
        credential = credentials.get(node.id)
        if credential is None:
            missing.append(node.id)
        else:
            accounts.append(node_account(settings.site_id, node, credential))
    return accounts, missing


# Mosquitto export -----------------------------------------------------------------------------------------
def render_passwd(accounts: Sequence[Account], header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{a.username}:{a.password_hash}" for a in accounts]
    return "\n".join(lines) + "\n"


def render_acl(accounts: Sequence[Account], header: str = "") -> str:
    """A Mosquitto ``acl_file``: nothing for anonymous clients, one ``user`` block per account."""
    lines = [f"# {line}" for line in header.splitlines()]
    for account in accounts:
        lines += ["", f"user {account.username}", *(f"topic {r.access.value} {r.topic}" for r in account.rules)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ExportResult:
    passwd: Path
    acl: Path
    users: list[str]  # service account first, then the nodes
    missing: list[str]  # registered nodes without credentials (they cannot log in)
    instructions: str


def export(session: Session, settings: Settings, out_dir: Path) -> ExportResult:
    """Write ``mosquitto.passwd`` and ``mosquitto.acl`` for the registry into ``out_dir`` (each atomically)."""
    accounts, missing = registered_accounts(session, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = (f"radio: site {settings.site_id}, written by `radio mqtt export` at {stamp}.\n"
              "Do not edit: issue credentials with `radio node credentials NODE` and export again.")
    passwd, acl = out_dir / PASSWD_FILE, out_dir / ACL_FILE
    _write_atomic(passwd, render_passwd(accounts, header), 0o640)
    _write_atomic(acl, render_acl(accounts, header), 0o644)
    return ExportResult(passwd=passwd, acl=acl, users=[a.username for a in accounts], missing=missing,
                        instructions=reload_instructions(passwd, acl))


def reload_instructions(passwd: Path, acl: Path) -> str:
    return (
        "In mosquitto.conf (once; docs/security.md has a complete example with TLS):\n"
        "    per_listener_settings false\n"
        "    allow_anonymous false\n"
        f"    password_file {passwd.resolve()}\n"
        f"    acl_file {acl.resolve()}\n"
        "    max_packet_size 70000\n"
        "Mosquitto must be able to read both files: chown root:mosquitto them (the password file stays 0640).\n"
        "Then make Mosquitto re-read them (after every export):\n"
        "    sudo systemctl reload mosquitto        # or: sudo kill -HUP $(pidof mosquitto)\n"
        "On reload Mosquitto disconnects clients whose password no longer matches; the others stay connected."
    )


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)  # whatever the umask
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
