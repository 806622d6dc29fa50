"""API keys and request limits of the HTTP service.

Keys are kept as sha256 digests only and compared with :func:`hmac.compare_digest` against every stored
digest (no early exit), so neither the key file in memory nor the timing of a refusal reveals a key.

The key file (``omnibind serve --api-key-file FILE``) holds one key per line, ``ROLE KEY``::

    # comments and blank lines are ignored
    read  3f9c1b...                  # may search, embed and read items
    write 77aa01...                  # may also add and delete items
    read  sha256:9b74c9897bac770f... # a key given by its sha256 hex digest instead of in clear

A client sends its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from omnibind.errors import OmnibindError

ROLES = ("read", "write")
LOOPBACK_NAMES = ("localhost",)


class ServeError(OmnibindError):
    """The server cannot start as configured (e.g. a public address without API keys)."""


def hash_key(key: str) -> str:
    """The sha256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKeys:
    """Digests of the read and write keys (a write key also reads)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.read or self.write)

    @classmethod
    def from_keys(cls, read: list[str] | None = None, write: list[str] | None = None) -> ApiKeys:
        """Hash keys given in clear."""
        return cls(tuple(hash_key(k) for k in read or []), tuple(hash_key(k) for k in write or []))

    def role(self, key: str | None) -> str | None:
        """``"write"``, ``"read"`` or None for a key (None or unknown)."""
        if not key:
            return None
        digest = hash_key(key)
        # every comparison runs, so the time taken does not depend on which digest (if any) matched
        is_write = _any_equal(digest, self.write)
        is_read = _any_equal(digest, self.read)
        return "write" if is_write else "read" if is_read else None


def _any_equal(digest: str, stored: tuple[str, ...]) -> bool:
    found = False
    for s in stored:
        found |= hmac.compare_digest(digest, s)
    return found


def load_key_file(path: str | Path) -> ApiKeys:
    """Read a key file (format in the module docstring); errors name the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ServeError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
    keys: dict[str, list[str]] = {r: [] for r in ROLES}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2 or parts[0] not in ROLES:
            raise ServeError(
                f"{path}:{number}: expected 'read KEY' or 'write KEY' (one key per line), got {text[:40]!r}"
            )
        role, key = parts
        if key.startswith("sha256:"):
            digest = key.removeprefix("sha256:").lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ServeError(f"{path}:{number}: 'sha256:' must be followed by 64 hex digits")
        elif len(key) < 16:
            raise ServeError(f"{path}:{number}: a key must be at least 16 characters long")
        else:
            digest = hash_key(key)
        keys[role].append(digest)
    if not keys["read"] and not keys["write"]:
        raise ServeError(f"{path} holds no keys; add lines 'read KEY' and/or 'write KEY'")
    return ApiKeys(tuple(keys["read"]), tuple(keys["write"]))


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """How the service runs.

    Attributes:
        host: the address it binds to; anything but loopback requires API keys.
        port: the TCP port.
        keys: hashed API keys; without keys (loopback only) reads are open and writes are disabled.
        max_body_bytes: larger request bodies are refused with 413.
        max_k: the largest ``k`` a search may ask for.
        max_embed: the most values one ``/v1/embed`` or ``/v1/items`` request may carry.
        workers: searches and embeddings computed at once (0: one per CPU core); more requests wait their
            turn, which keeps tail latency near ``queue length x service time`` instead of time-slicing.
        batch_wait_ms: raw query values of concurrent requests are embedded together: the first value
            waits up to this long for others (0: no batching, each request calls the encoder itself).
        max_batch: the most values in one encoder call; that many waiting go at once.
        threads: PyTorch's intra-op threads in the server process (0: :meth:`torch_threads` picks).
            ``create_app`` leaves them alone (they are the process's); ``omnibind serve`` sets them.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    keys: ApiKeys = field(default_factory=ApiKeys)
    max_body_bytes: int = 8 * 1024 * 1024
    max_k: int = 1000
    max_embed: int = 64
    workers: int = 0
    batch_wait_ms: float = 2.0
    max_batch: int = 64
    threads: int = 0

    def torch_threads(self, processes: int = 1, cores: int | None = None) -> int:
        """The intra-op threads for one of ``processes`` server processes: ``threads`` when set, else the
        process's share of the cores less one, at least 1.

        The core left over runs the event loop (HTTP, JSON) and the clients of a shared box. An encoder
        call whose threads fill every core gets one of them preempted by that work, and the other
        threads wait for it at every barrier: measured with MiniLM on 2 cores (``serve_load.py
        --quick``), 2 threads gave 20.6 ms for one client and 105 req/s batched under load, 1 thread
        17.1 ms and 130 req/s.
        """
        if self.threads:
            return self.threads
        cores = cores or os.cpu_count() or 1
        return max(1, cores // max(1, processes) - 1)

    def check(self) -> None:
        """Refuse settings that would expose the index without keys."""
        if not is_loopback(self.host) and not self.keys.configured:
            raise ServeError(
                f"refusing to bind to {self.host}: only loopback (127.0.0.1) may be served without API keys; "
                "pass --api-key-file FILE with lines 'read KEY' / 'write KEY' (see docs/serving.md)"
            )
        if self.max_body_bytes < 1024 or self.max_k < 1 or self.max_embed < 1 or self.workers < 0:
            raise ServeError("max_body_bytes must be at least 1024 and max_k, max_embed at least 1")
        if not (self.batch_wait_ms >= 0 and math.isfinite(self.batch_wait_ms)):
            raise ServeError(
                f"batch_wait_ms (--batch-wait-ms) must be a number of milliseconds >= 0 (0 turns batching "
                f"off), got {self.batch_wait_ms}"
            )
        if self.max_batch < 1:
            raise ServeError(f"max_batch (--max-batch) must be at least 1, got {self.max_batch}")
        if self.threads < 0:
            raise ServeError(f"threads (--threads) must be 0 (automatic) or more, got {self.threads}")
