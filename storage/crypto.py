"""Encryption at rest: the page/frame cipher and the wrapped data key.

Responsibility
    `PageCipher` seals and opens every page and WAL frame of an encrypted database
    with AES-256-GCM under one random data key (DEK). The key file (one small file in
    the data directory, conventionally named ``key``) holds that DEK wrapped by a
    key-encryption key (KEK) derived from the user's passphrase with scrypt, or given
    directly as a raw 32-byte key. This module owns the sealed-blob layout and the key
    file format; it does not know page numbers or frame layouts (the caller builds the
    associated data) and it decides no policy (whether a database is encrypted is the
    presence of the key file, decided by `mvcc`).

Invariants
(I1) Every `seal` draws a fresh random 96-bit nonce from `os.urandom`; no nonce is
     derived from a counter, a page number or a clock.
(I2) Every ciphertext is authenticated together with associated data (AAD) that names
     its place (the caller passes e.g. file kind + pgno, or WAL segment + commit ts), so
     a page moved, swapped or replayed into another place fails to open. The wrap of
     the DEK is bound the same way to the key file header (bytes 0..44).
(I3) A wrong secret is `InvalidKeyError`, never `CorruptPage`: the key file carries a
     CRC32 of all its bytes, checked before anything is decrypted, so a failed
     unwrap of a CRC-valid file can only mean the secret is wrong. Damage is
     `CorruptPage`; an unknown version or kdf is `FormatError`.
(I4) `create_key_file` and `rewrap_key_file` replace the key file atomically (write
     ``key.tmp``, fsync, `os.replace`, fsync the directory): after a crash at any
     point exactly one of the old or the new secret opens the database.
(I5) No secret is written in plaintext: not the DEK, the KEK, the passphrase or the
     raw key, to the key file, to a page, or to an exception message or repr.

Sealed blob (a page or a frame body on disk)
    ``nonce (12) || ciphertext (len(plaintext)) || tag (16)``: `OVERHEAD` = 28 bytes.
    `open` returns None for any blob that fails authentication or is shorter than
    `OVERHEAD`; the caller knows which page or frame it was and raises `CorruptPage`
    naming it. `cryptography.exceptions.InvalidTag` never escapes (errors.py I1).

    Why a random nonce (I1) rather than a counter: pages and frames are written by
    many processes, and a counter would need a durable, shared, crash-safe
    allocator; reusing one GCM nonce under one key leaks the XOR of two plaintexts
    and the authentication key, which is far worse than the cost of 12 random bytes.
    The random-nonce bound (NIST SP 800-38D: at most 2**32 seals per key, collision
    probability below 2**-32) is 16 TiB of 4 KiB pages written under one DEK; a
    database that gets near it needs a DEK rotation (rewrite every page), not a
    rewrap. AES-GCM-SIV would lift the bound but needs OpenSSL >= 3.2, which not every
    `cryptography` wheel or distro build provides.

    Measured (AMD EPYC, Python 3.11, cryptography 50): seal + open of a 4096-byte
    page ~4 us (the cipher object is built once per DEK and reused).

Key derivation
    scrypt, n = 2**15, r = 8, p = 1 by default: 128 * r * n = 32 MiB of memory and
    ~80-110 ms on the machine above (n = 2**14: ~45 ms; 2**16: ~170 ms; the tests'
    2**10: ~2 ms). The cost is paid once per process open (and once per rekey), never
    per page, so a worker pool of a few dozen processes spends a few seconds of CPU in
    total, while an attacker holding the key file pays 32 MiB and ~0.1 s per guess.
    Memory-hard scrypt was chosen over PBKDF2-HMAC-SHA256 (DESIGN.md allows either)
    because GPUs and ASICs gain far less on it per guess. The cost is stored in the
    file, so raising the default later does not break existing databases. A raw
    32-byte key (``key=``) is used directly as the KEK: it is already uniformly
    random, and stretching it would only slow every open.

Key file, format version 1 (big-endian; ``KEYFILE`` below)
    ======  ====  ==============================================================
    OFFSET  SIZE  DESCRIPTION
    ======  ====  ==============================================================
    0       8     magic ``b"MVCCKEY\\0"``
    8       2     format version, 1
    10      1     kdf id: 1 = scrypt (passphrase), 2 = raw key
    11      1     scrypt log2(n), in [10, 22]; 0 for a raw key
    12      2     scrypt r (8); 0 for a raw key
    14      2     scrypt p (1); 0 for a raw key
    16      16    scrypt salt, random per database and per rewrap; zero for a raw key
    32      12    nonce of the wrap (random)
    44      48    wrapped DEK: AES-256-GCM(KEK, nonce, DEK, AAD = bytes 0..44),
                  32 bytes ciphertext then 16 bytes tag
    92      8     key id of the DEK: sha256(b"mvcc-dek-id\\0" + DEK)[:8]
    100     4     CRC32 of bytes 0..100
    ======  ====  ==============================================================

    In every format version the last 4 bytes of the file are the CRC32 of all the
    bytes before them, and bytes 0..10 are magic and version: a reader checks length,
    magic and CRC first (damage: `CorruptPage`), then the version (a newer file with
    a longer layout: `FormatError`, not "corrupt"). The CRC is not a MAC: it tells an
    accidental flip from a wrong secret (I3). Tampering by someone who also rewrites
    the CRC surfaces as "wrong passphrase or key", or as a key id mismatch, never as
    a wrong DEK, because the wrap itself is authenticated.

    The key id is not secret: it is also copied into the plaintext headers of the
    page file and WAL segments, so "this file belongs to another key" is told apart
    from corruption without decrypting anything.

Concurrency and fork
    A `PageCipher` holds no mutable state; threads and forked children may share it.
    `load_key_file` may run at any time in any process: it sees the old or the new
    key file whole (I4). `create_key_file` and `rewrap_key_file` must be serialized
    by the caller (the database's exclusive lock): two concurrent rewraps would share
    ``key.tmp``.

Known limit: Python cannot reliably erase secrets from memory (bytes are immutable
and `cryptography` copies keys); a process that holds a DEK keeps it until exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import unicodedata
import zlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from storage.errors import CorruptPage, FormatError, InvalidKeyError

__all__ = [
    "DEFAULT_SCRYPT_LOG2N",
    "KDF_RAW",
    "KDF_SCRYPT",
    "KEYFILE",
    "KEY_SIZE",
    "NONCE_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "KeyFileInfo",
    "PageCipher",
    "create_key_file",
    "key_id",
    "load_key_file",
    "read_key_file_info",
    "rewrap_key_file",
]

KEY_SIZE = 32  # AES-256: DEK, KEK and raw key are all this long
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
assert OVERHEAD == 28

KEY_ID_SIZE = 8
_KEY_ID_DOMAIN = b"mvcc-dek-id\0"  # domain separation: this hash is never confused with another

# --- key file format (docs/format.md "Key file") -------------------------------------------

MAGIC = b"MVCCKEY\0"
VERSION = 1
KDF_SCRYPT = 1
KDF_RAW = 2
DEFAULT_SCRYPT_LOG2N = 15
MIN_SCRYPT_LOG2N = 10
MAX_SCRYPT_LOG2N = 22
SCRYPT_R = 8
SCRYPT_P = 1
SALT_SIZE = 16

# magic, version, kdf, log2n, r, p, salt, wrap nonce, wrapped DEK, key id, crc32
KEYFILE = struct.Struct(">8sHBBHH16s12s48s8sI")
assert KEYFILE.size == 104
_WRAP_HEADER = struct.Struct(">8sHBBHH16s12s")  # bytes 0..44: the AAD of the wrap (I2)
assert _WRAP_HEADER.size == 44
_PREFIX = struct.Struct(">8sH")  # magic + version: the same in every format version
assert _PREFIX.size == 10
_CRC = struct.Struct(">I")  # the last 4 bytes of every version
_CRC_START = KEYFILE.size - _CRC.size
assert _CRC_START == 100
_MAX_READ = 64 * 1024  # a key file is 104 bytes; never slurp a huge file that is not ours


def key_id(dek: bytes) -> bytes:
    """Return the 8-byte public identifier of a data key (safe to store in plaintext).

    >>> len(key_id(bytes(32)))
    8
    """
    return hashlib.sha256(_KEY_ID_DOMAIN + dek).digest()[:KEY_ID_SIZE]


class PageCipher:
    """AES-256-GCM sealing of pages and frames under one data key (I1, I2).

    >>> c = PageCipher(bytes(32))
    >>> c.open(b"pgno 7", c.seal(b"pgno 7", b"hello"))
    b'hello'
    >>> c.open(b"pgno 8", c.seal(b"pgno 7", b"hello")) is None
    True
    """

    __slots__ = ("_aead", "_dek", "key_id")

    def __init__(self, dek: bytes) -> None:
        dek = _check_key(dek, "data key")
        self._dek = dek
        # Built once: AESGCM expands the key schedule at construction, and that is most
        # of the cost of a 4 KiB page if redone per call.
        self._aead = AESGCM(dek)
        self.key_id = key_id(dek)

    def __repr__(self) -> str:
        return f"PageCipher(key_id={self.key_id.hex()})"  # the id only, never the key (I5)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would put the DEK on a pipe or in a file in plaintext (I5).
        raise TypeError("PageCipher cannot be pickled: it holds the data key")

    def data_key(self) -> bytes:
        """The data key, for a process this one starts to read the same files
        (the vacuum process gets it over a pipe): never for a file, log or argv (I5)."""
        return self._dek

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """Return ``nonce || ciphertext || tag`` for `plaintext` bound to `aad`."""
        nonce = os.urandom(NONCE_SIZE)  # (I1) fresh per call, never reused
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, aad: bytes, sealed: bytes) -> bytes | None:
        """Return the plaintext, or None if `sealed` is short, damaged or not for `aad`."""
        if len(sealed) < OVERHEAD:
            return None
        view = memoryview(sealed)
        try:
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
        except InvalidTag:
            # The caller names the page or frame in its CorruptPage (errors.py I1).
            return None


# --- secrets ---------------------------------------------------------------------------------


def _check_key(key: object, what: str) -> bytes:
    """Return `key` as bytes, or raise InvalidKeyError naming its length (never its value)."""
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise InvalidKeyError(f"{what} must be {KEY_SIZE} bytes, not {type(key).__name__}")
    raw = bytes(key)
    if len(raw) != KEY_SIZE:
        raise InvalidKeyError(f"{what} must be {KEY_SIZE} bytes, got {len(raw)}")
    return raw


def _passphrase_bytes(passphrase: object) -> bytes:
    if isinstance(passphrase, str):
        # NFC: "é" typed as one code point (macOS IME) or as e + combining accent
        # (some Linux input methods, copy-paste) is the same passphrase to the user.
        try:
            secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates, e.g. from os.fsdecode
            raise InvalidKeyError("passphrase is not valid Unicode text") from None
    elif isinstance(passphrase, (bytes, bytearray, memoryview)):
        secret = bytes(passphrase)  # bytes are taken as given: no normalisation applies
    else:
        raise InvalidKeyError(f"passphrase must be str or bytes, not {type(passphrase).__name__}")
    if not secret:
        raise InvalidKeyError("passphrase must not be empty")
    return secret


def _secret(passphrase: object, key: object, *, missing: str) -> tuple[int, bytes]:
    """Return (kdf id, secret bytes) for exactly one of passphrase/key."""
    if passphrase is None and key is None:
        raise InvalidKeyError(missing)
    if passphrase is not None and key is not None:
        raise InvalidKeyError("pass only one of passphrase= or key=, not both")
    if key is not None:
        return KDF_RAW, _check_key(key, "key")
    return KDF_SCRYPT, _passphrase_bytes(passphrase)


def _check_log2n(scrypt_log2n: object) -> int:
    if (
        not isinstance(scrypt_log2n, int)
        or isinstance(scrypt_log2n, bool)
        or not MIN_SCRYPT_LOG2N <= scrypt_log2n <= MAX_SCRYPT_LOG2N
    ):
        raise FormatError(
            f"scrypt_log2n must be an int in [{MIN_SCRYPT_LOG2N}, {MAX_SCRYPT_LOG2N}], "
            f"got {scrypt_log2n!r}"
        )
    return scrypt_log2n


def _derive_kek(kdf: int, secret: bytes, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    if kdf == KDF_RAW:
        return secret  # already 32 uniformly random bytes: stretching would only cost time
    return Scrypt(salt=salt, length=KEY_SIZE, n=1 << log2n, r=r, p=p).derive(secret)


# --- key file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFileInfo:
    """The parsed, CRC-checked fields of a key file; nothing in it is secret."""

    kdf: int
    log2n: int
    r: int
    p: int
    salt: bytes
    nonce: bytes
    wrapped: bytes
    key_id: bytes

    @property
    def kdf_name(self) -> str:
        return "passphrase" if self.kdf == KDF_SCRYPT else "key"


def _pack(kdf: int, secret: bytes, dek: bytes, log2n: int) -> bytes:
    """Return the bytes of a version 1 key file wrapping `dek` under `secret`."""
    if kdf == KDF_SCRYPT:
        salt, r, p = os.urandom(SALT_SIZE), SCRYPT_R, SCRYPT_P
    else:
        salt, log2n, r, p = bytes(SALT_SIZE), 0, 0, 0
    nonce = os.urandom(NONCE_SIZE)
    header = _WRAP_HEADER.pack(MAGIC, VERSION, kdf, log2n, r, p, salt, nonce)
    kek = _derive_kek(kdf, secret, salt, log2n, r, p)
    wrapped = AESGCM(kek).encrypt(nonce, dek, header)  # (I2) bound to the header
    body = header + wrapped + key_id(dek)
    return body + _CRC.pack(zlib.crc32(body))


def _parse(data: bytes, path: str) -> KeyFileInfo:
    """Check and unpack a key file: damage is CorruptPage, the unknown is FormatError (I3)."""
    # 1. long enough for the parts every version shares: magic, version, trailing CRC
    if len(data) < _PREFIX.size + _CRC.size:
        raise CorruptPage(f"key file truncated: {len(data)} bytes", file=path)
    magic, version = _PREFIX.unpack_from(data)
    # 2. magic: the file at this name in our directory is ours, so a bad one is damage
    if magic != MAGIC:
        raise CorruptPage("not a key file (bad magic)", file=path)
    # 3. CRC over everything before the last 4 bytes: any flip, truncation or extension
    if zlib.crc32(data[:-4]) != _CRC.unpack_from(data, len(data) - 4)[0]:
        if version == VERSION and len(data) != KEYFILE.size:
            raise CorruptPage(
                f"key file truncated or extended: {len(data)} bytes, expected {KEYFILE.size}",
                file=path,
            )
        raise CorruptPage("key file checksum mismatch", file=path)
    # 4. only now trust the version: a CRC-valid newer file is not corrupt, just newer
    if version != VERSION:
        raise FormatError(f"unsupported key file version {version} (this build reads 1)", file=path)
    if len(data) != KEYFILE.size:
        raise CorruptPage(f"key file is {len(data)} bytes, expected {KEYFILE.size}", file=path)
    _, _, kdf, log2n, r, p, salt, nonce, wrapped, kid, _ = KEYFILE.unpack(data)
    # 5. kdf and its parameters: anything we would never write is an unknown format
    if kdf == KDF_SCRYPT:
        if not (MIN_SCRYPT_LOG2N <= log2n <= MAX_SCRYPT_LOG2N and 1 <= r <= 32 and 1 <= p <= 16):
            raise FormatError(f"unsupported scrypt cost n=2**{log2n} r={r} p={p}", file=path)
    elif kdf == KDF_RAW:
        if (log2n, r, p, salt) != (0, 0, 0, bytes(SALT_SIZE)):
            raise FormatError("raw-key key file carries scrypt parameters", file=path)
    else:
        raise FormatError(f"unknown kdf id {kdf}", file=path)
    return KeyFileInfo(kdf, log2n, r, p, salt, nonce, wrapped, kid)


def read_key_file_info(path: str | os.PathLike[str]) -> KeyFileInfo:
    """Read and check the public fields of the key file at `path` (no secret needed)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read(_MAX_READ + 1)
    if len(data) > _MAX_READ:
        raise CorruptPage(f"key file is over {_MAX_READ} bytes", file=path)
    return _parse(data, path)


def _unwrap(info: KeyFileInfo, kdf: int, secret: bytes, path: str) -> bytes:
    """Return the DEK wrapped in `info`, or raise InvalidKeyError for a wrong secret (I3)."""
    if kdf != info.kdf:
        given, other = ("key=", "passphrase=") if kdf == KDF_RAW else ("passphrase=", "key=")
        raise InvalidKeyError(
            f"this database was created with a {info.kdf_name}: pass {other}, not {given}",
            file=path,
        )
    kek = _derive_kek(kdf, secret, info.salt, info.log2n, info.r, info.p)
    header = _WRAP_HEADER.pack(
        MAGIC, VERSION, info.kdf, info.log2n, info.r, info.p, info.salt, info.nonce
    )
    try:
        dek = AESGCM(kek).decrypt(info.nonce, info.wrapped, header)
    except InvalidTag:
        # The CRC passed, so the file is as written: the secret is what differs (I3).
        raise InvalidKeyError("wrong passphrase or key", file=path) from None
    if key_id(dek) != info.key_id:
        # Only reachable by a deliberate edit that also fixed the CRC; refuse the DEK.
        raise CorruptPage("key file key id does not match its data key", file=path)
    return dek


def load_key_file(
    path: str | os.PathLike[str],
    *,
    passphrase: str | bytes | None = None,
    key: bytes | None = None,
) -> bytes:
    """Return the DEK of the key file at `path`, unwrapped with the passphrase or raw key.

    Raises InvalidKeyError for a missing, mismatched (passphrase vs key) or wrong secret;
    CorruptPage for a damaged file; FormatError for an unknown version or kdf; OSError
    (e.g. FileNotFoundError) when the file cannot be read.
    """
    path = os.fspath(path)
    kdf, secret = _secret(
        passphrase, key, missing="this database is encrypted: pass passphrase= or key="
    )
    return _unwrap(read_key_file_info(path), kdf, secret, path)


def create_key_file(
    path: str | os.PathLike[str],
    *,
    passphrase: str | bytes | None = None,
    key: bytes | None = None,
    scrypt_log2n: int = DEFAULT_SCRYPT_LOG2N,
) -> bytes:
    """Create the key file at `path` around a new random DEK and return the DEK.

    Refuses (FileExistsError) to replace an existing key file: that would orphan every
    page sealed under the old DEK. The caller serializes creation (module docstring).
    """
    path = os.fspath(path)
    kdf, secret = _secret(passphrase, key, missing="pass exactly one of passphrase= or key=")
    log2n = _check_log2n(scrypt_log2n)
    if os.path.lexists(path):
        raise FileExistsError(f"{path}: a key file already exists; use rewrap_key_file")
    dek = os.urandom(KEY_SIZE)
    # 0o600: the wrapped DEK is safe only as long as the passphrase resists guessing,
    # so do not hand the file to every local user for offline guessing.
    _atomic_write(path, _pack(kdf, secret, dek, log2n), 0o600)
    return dek


def rewrap_key_file(
    path: str | os.PathLike[str],
    dek: bytes,
    *,
    passphrase: str | bytes | None = None,
    key: bytes | None = None,
    scrypt_log2n: int = DEFAULT_SCRYPT_LOG2N,
) -> None:
    """Wrap the same `dek` under a new secret (fresh salt and nonce), atomically (I4).

    The DEK is unchanged, so no page is rewritten. `dek` must be the one the current
    file wraps (checked by key id): rewrapping a different key would make every page
    unreadable. A damaged current file is CorruptPage here too.
    """
    path = os.fspath(path)
    dek = _check_key(dek, "data key")
    kdf, secret = _secret(passphrase, key, missing="pass exactly one of passphrase= or key=")
    log2n = _check_log2n(scrypt_log2n)
    if read_key_file_info(path).key_id != key_id(dek):
        raise InvalidKeyError("the data key given does not belong to this key file", file=path)
    mode = os.stat(path).st_mode & 0o777  # keep whatever access the operator set
    _atomic_write(path, _pack(kdf, secret, dek, log2n), mode)


def _atomic_write(path: str, data: bytes, mode: int) -> None:
    """Replace `path` by `data`; a crash leaves the old file or the new, whole (I4)."""
    tmp = path + ".tmp"
    # 1. drop a stale .tmp from an earlier crash, so O_EXCL creates ours with `mode`
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    # 2. write, flush and fsync it: its bytes are durable before its name can change
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    # 3. swap names: every reader sees the old file or the new one, never a mix
    os.replace(tmp, path)
    # 4. make the rename itself durable
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(dirname: str) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory for fsync; NTFS journals the rename
    fd = os.open(dirname, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
