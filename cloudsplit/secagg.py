"""Secure aggregation of one federated round (Bonawitz et al. 2017, "Practical secure aggregation
for privacy-preserving machine learning", its semi-honest variant): the server learns the sum of
the sampled clients' updates and nothing about any one of them.

A round's protocol, with U1 ⊇ U2 ⊇ U3 the clients still taking part after each stage:

1. keys     each sampled client makes two X25519 key pairs, c (to encrypt shares to the others)
            and s (to agree pair masks), and advertises the public halves. U1: those that did.
2. shares   each client u in U1 draws a self-mask seed b_u and Shamir-shares b_u and its private
            s key, threshold t, among U1 (itself included; share x-coordinate = its position in
            U1 + 1), each share encrypted with AES-GCM under the key u agrees with the holder's c
            key. The server routes ciphertexts it cannot read. U2: those that shared.
3. masked   u sends y_u = x_u + PRG(b_u) + sum_{v in U2, v > u} PRG(s_uv) - sum_{v in U2, v < u} PRG(s_uv)
            in the ring Z / 2^64 (x_u the update in fixed point). The server keeps only the running
            sum of the y's. U3: those whose y arrived.
4. unmask   every u in U3 reveals its shares of b_v for v in U3 and of s_v for v in U2 \\ U3, never
            both for one client (the client checks). With t of them the server rebuilds the b_v of
            the survivors and the s keys of the dropped, removes the self masks and the pair masks
            that the dropped clients' missing y's would have cancelled, and holds sum_{U3} x_u.

Pair masks between survivors cancel in the sum; a dropped client's are recomputed from its
reconstructed s key and the survivors' public s keys; the self mask b_u keeps y_u hidden even
when the server learns u's pair masks (because u was late rather than gone). The server needs at
least t = ceil(threshold * sampled) (and at least 2) clients at every stage, so it never holds t
shares of both secrets of one client unless fewer than t clients collude with it.

What it does not do: the active-adversary variant (signatures on the advertised keys from a PKI
and a consistency round on U3), so a server that lies about keys or tells clients different
survivor sets is outside this model; and the server sees the sum in the clear (DP noise, if asked
for, is added by the server after unmasking).

Numbers: an update of L floats travels as L + 1 int64s (the last is the update's weight), fixed
point with FRACTION_BITS fractional bits, so |value| < 2^(63 - FRACTION_BITS) for the whole sum.
The PRG is ChaCha20's keystream under a seed from HKDF-SHA256 of the X25519 output (or of b_u);
Shamir's scheme works in the prime field of 2^521 - 1, wide enough for a 256-bit secret.
"""
from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

FRACTION_BITS = 24
SCALE = float(1 << FRACTION_BITS)
LIMIT = float(1 << (62 - FRACTION_BITS))      # per value: leaves a factor 2 of room before the sign bit
PRIME = (1 << 521) - 1
SHARE_BYTES = 66                              # one field element, big-endian
KEY_BYTES = 32
NONCE_BYTES = 12
# sender id, recipient id (each 1 length byte + up to 64 bytes) are inside the ciphertext as well
# as around it, so a server that swaps ciphertexts between pairs is caught by the recipient.
MAX_ID = 64


class SecAggError(ValueError):
    """A protocol message that does not fit the round: names what and whose."""


def round_context(job_id: str, number: int) -> bytes:
    """What a round's keys, masks and ciphertexts are bound to: nothing carries over between rounds or jobs."""
    return f"edgesplit-secagg|{job_id}|{number}".encode()


def threshold_for(sampled: int, fraction: float) -> int:
    return max(2, math.ceil(sampled * fraction - 1e-9))   # 2/3 of 3 is 2, not 3 after rounding


# -- fixed point ---------------------------------------------------------------------------------

def encode_fixed(values: np.ndarray) -> np.ndarray:
    """float -> uint64 ring elements (two's complement of round(value * 2^FRACTION_BITS))."""
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        raise SecAggError("an update holds inf or nan")
    if values.size and np.max(np.abs(values)) >= LIMIT:
        raise SecAggError(f"an update value of magnitude {np.max(np.abs(values)):.3g} is past the fixed-point "
                          f"range (2^{62 - FRACTION_BITS})")
    return np.rint(values * SCALE).astype(np.int64).view(np.uint64)


def decode_fixed(ring: np.ndarray) -> np.ndarray:
    return np.asarray(ring, np.uint64).view(np.int64).astype(np.float64) / SCALE


# -- primitives ----------------------------------------------------------------------------------

def _derive(secret: bytes, context: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=context + b"|" + purpose).derive(secret)


def expand_mask(seed: bytes, length: int) -> np.ndarray:
    """``length`` uint64s of ChaCha20 keystream under the 32-byte ``seed``."""
    encryptor = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_public(data: bytes, whose: str) -> X25519PublicKey:
    if len(data) != KEY_BYTES:
        raise SecAggError(f"{whose}: a public key is {KEY_BYTES} bytes, got {len(data)}")
    return X25519PublicKey.from_public_bytes(data)


def pair_seed(private: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    return _derive(private.exchange(load_public(peer_public, "pair key")), context, b"mask")


def shamir_split(secret: bytes, threshold: int, count: int) -> list[bytes]:
    """Shares of ``secret`` at x = 1..count; any ``threshold`` of them give it back."""
    value = int.from_bytes(secret, "big")
    coefficients = [value] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, count + 1):
        y = 0
        for coefficient in reversed(coefficients):
            y = (y * x + coefficient) % PRIME
        shares.append(y.to_bytes(SHARE_BYTES, "big"))
    return shares


def shamir_combine(points: dict[int, bytes], threshold: int, length: int = KEY_BYTES) -> bytes:
    """The secret from ``threshold`` shares {x: share} (Lagrange interpolation at 0)."""
    if len(points) < threshold:
        raise SecAggError(f"{len(points)} shares, the threshold is {threshold}")
    chosen = sorted(points.items())[:threshold]
    secret = 0
    for i, (xi, share) in enumerate(chosen):
        if len(share) != SHARE_BYTES:
            raise SecAggError(f"a share is {SHARE_BYTES} bytes, got {len(share)}")
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(chosen):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + int.from_bytes(share, "big") * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * length):
        raise SecAggError("the shares do not combine to a secret of the expected size (a share was altered)")
    return secret.to_bytes(length, "big")


def _ids(*ids: str) -> bytes:
    out = b""
    for name in ids:
        raw = name.encode()
        if len(raw) > MAX_ID:
            raise SecAggError(f"client id {name[:40]!r} is longer than {MAX_ID} bytes")
        out += bytes([len(raw)]) + raw
    return out


def ciphertext_bytes(sender: str, recipient: str) -> int:
    return NONCE_BYTES + len(_ids(sender, recipient)) + 2 * SHARE_BYTES + 16


def signed_mask_sum(own: str, own_private: X25519PrivateKey, peers: dict[str, bytes], context: bytes,
                    length: int) -> np.ndarray:
    """sum over peers v of +PRG(s_uv) for v > own, -PRG(s_uv) for v < own (mod 2^64)."""
    total = np.zeros(length, np.uint64)
    for peer, public in peers.items():
        if peer == own:
            continue
        mask = expand_mask(pair_seed(own_private, public, context), length)
        if peer > own:
            total += mask
        else:
            total -= mask
    return total


# -- the client's side -----------------------------------------------------------------------------

@dataclass
class Participant:
    client_id: str
    cipher_public: bytes
    mask_public: bytes


class ClientSession:
    """One client's secrets for one round; ``context`` (job and round) keeps rounds apart."""

    def __init__(self, client_id: str, context: bytes):
        self.client_id, self.context = client_id, context
        self.cipher_key = X25519PrivateKey.generate()
        self.mask_key = X25519PrivateKey.generate()
        self.self_seed = os.urandom(KEY_BYTES)
        self.participants: dict[str, Participant] = {}
        self.threshold = 0
        self.held: dict[str, tuple[bytes, bytes]] = {}     # owner -> (its s-key share, its b share) I hold
        self.holders: list[str] = []
        self.revealed = False
        self.bytes_sent = self.bytes_received = 0     # the protocol's messages, counted by the transport

    def advertise(self) -> tuple[bytes, bytes]:
        return public_bytes(self.cipher_key), public_bytes(self.mask_key)

    def _channel_key(self, peer_cipher_public: bytes) -> bytes:
        return _derive(self.cipher_key.exchange(load_public(peer_cipher_public, "cipher key")), self.context, b"share")

    def share(self, participants: list[Participant], threshold: int) -> dict[str, bytes]:
        """Ciphertexts of my shares, by recipient (me included: I keep a share of my own secrets)."""
        ids = [p.client_id for p in participants]
        if self.client_id not in ids:
            raise SecAggError(f"the round's key list does not hold this client ({self.client_id})")
        if len(set(ids)) != len(ids):
            raise SecAggError("the round's key list names a client twice")
        if not 2 <= threshold <= len(ids):
            raise SecAggError(f"threshold {threshold} does not fit {len(ids)} participants")
        mine = (public_bytes(self.cipher_key), public_bytes(self.mask_key))
        given = participants[ids.index(self.client_id)]
        if (given.cipher_public, given.mask_public) != mine:
            raise SecAggError("the round's key list carries other keys for this client")
        self.participants = {p.client_id: p for p in participants}
        self.threshold = threshold
        key_shares = shamir_split(private_bytes(self.mask_key), threshold, len(ids))
        seed_shares = shamir_split(self.self_seed, threshold, len(ids))
        out = {}
        for k, participant in enumerate(participants):
            nonce = os.urandom(NONCE_BYTES)
            header = _ids(self.client_id, participant.client_id)
            sealed = AESGCM(self._channel_key(participant.cipher_public)).encrypt(
                nonce, header + key_shares[k] + seed_shares[k], self.context)
            out[participant.client_id] = nonce + sealed
        return out

    def receive(self, holders: list[str], ciphertexts: dict[str, bytes]) -> None:
        """The shares the others sent me; ``holders`` is U2 (who shared), each must have sent one."""
        if self.client_id not in holders:
            raise SecAggError(f"this client ({self.client_id}) is not among the round's share holders")
        unknown = [h for h in holders if h not in self.participants]
        if unknown:
            raise SecAggError(f"share holders {unknown[:3]} did not advertise keys this round")
        if len(holders) < self.threshold:
            raise SecAggError(f"{len(holders)} share holders, below the threshold {self.threshold}")
        if set(ciphertexts) != set(holders):
            raise SecAggError("the shares received do not come from exactly the round's share holders")
        for sender, blob in ciphertexts.items():
            nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
            try:
                plain = AESGCM(self._channel_key(self.participants[sender].cipher_public)).decrypt(
                    nonce, sealed, self.context)
            except Exception:   # InvalidTag: altered, or not encrypted to me
                raise SecAggError(f"the share from {sender} does not decrypt") from None
            header = _ids(sender, self.client_id)
            if not plain.startswith(header) or len(plain) != len(header) + 2 * SHARE_BYTES:
                raise SecAggError(f"the share from {sender} was sealed for another pair")
            body = plain[len(header):]
            self.held[sender] = (body[:SHARE_BYTES], body[SHARE_BYTES:])
        self.holders = sorted(holders)

    def mask(self, update: np.ndarray) -> np.ndarray:
        """y = x + PRG(b) + signed pair masks with the other holders, all in Z / 2^64."""
        if not self.holders:
            raise SecAggError("mask() before the shares stage completed")
        length = len(update)
        peers = {h: self.participants[h].mask_public for h in self.holders}
        return (np.asarray(update, np.uint64) + expand_mask(_derive(self.self_seed, self.context, b"self"), length)
                + signed_mask_sum(self.client_id, self.mask_key, peers, self.context, length))

    def reveal(self, survivors: list[str], dropped: list[str]) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(shares of b_v for the survivors, shares of s_v for the dropped): never both of one
        client, only for holders, and only when the survivors reach the threshold."""
        survivors_set, dropped_set = set(survivors), set(dropped)
        if survivors_set & dropped_set:
            raise SecAggError(f"the server asks for both secrets of {sorted(survivors_set & dropped_set)[:3]}")
        if not survivors_set | dropped_set <= set(self.holders):
            raise SecAggError("the server names clients that did not hold shares this round")
        if survivors_set | dropped_set != set(self.holders):
            raise SecAggError("the survivors and the dropped do not cover the round's share holders")
        if len(survivors_set) < self.threshold or self.client_id not in survivors_set:
            raise SecAggError(f"{len(survivors_set)} survivors, below the threshold {self.threshold} "
                              "or without this client")
        if self.revealed:
            raise SecAggError("this client already revealed its shares for the round")
        self.revealed = True
        return ({v: self.held[v][1] for v in sorted(survivors_set)}, {v: self.held[v][0] for v in sorted(dropped_set)})


def share_x(participants: list[str], client_id: str) -> int:
    return participants.index(client_id) + 1


# -- the server's side ---------------------------------------------------------------------------

@dataclass
class ServerRound:
    """What the server keeps of a round's protocol: public keys, ciphertexts in transit (sealed to
    their recipients), the running sum of masked vectors, and revealed shares until unmasking.
    Nothing here is any one client's update."""
    context: bytes
    sampled: frozenset[str]
    threshold: int
    length: int                                                    # ring elements per update
    keys: dict[str, Participant] = field(default_factory=dict)    # U1, in the order they advertised
    order: list[str] = field(default_factory=list)                 # U1 frozen: share x = index + 1
    outbox: dict[str, dict[str, bytes]] = field(default_factory=dict)   # recipient -> sender -> ciphertext
    holders: list[str] = field(default_factory=list)               # U2
    masked_sum: np.ndarray | None = None
    masked: set[str] = field(default_factory=set)                 # U3 (grows while the stage is open)
    survivors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    seed_shares: dict[str, dict[int, bytes]] = field(default_factory=dict)   # survivor -> {x: share of b}
    key_shares: dict[str, dict[int, bytes]] = field(default_factory=dict)    # dropped -> {x: share of s}
    revealed: set[str] = field(default_factory=set)
    bytes_received: int = 0                                        # keys, shares and reveals (not the masked vectors)

    def __post_init__(self):
        self.masked_sum = np.zeros(self.length, np.uint64)

    def add_keys(self, client_id: str, cipher_public: bytes, mask_public: bytes) -> None:
        load_public(cipher_public, f"client {client_id}'s cipher key")
        load_public(mask_public, f"client {client_id}'s mask key")
        if cipher_public == mask_public:
            raise SecAggError(f"client {client_id} advertised one key for both purposes")
        self.keys[client_id] = Participant(client_id, cipher_public, mask_public)
        self.bytes_received += len(cipher_public) + len(mask_public)

    def close_keys(self) -> list[Participant]:
        self.order = list(self.keys)
        return [self.keys[c] for c in self.order]

    def add_shares(self, sender: str, shares: dict[str, bytes]) -> None:
        expected = set(self.order)
        if set(shares) != expected:
            missing, extra = sorted(expected - set(shares)), sorted(set(shares) - expected)
            raise SecAggError(f"client {sender} must send one share to each of the round's {len(expected)} "
                              f"participants (missing {missing[:3]}, not participants {extra[:3]})")
        for recipient, blob in shares.items():
            if len(blob) != ciphertext_bytes(sender, recipient):
                raise SecAggError(f"client {sender}'s share for {recipient} is {len(blob)} bytes, "
                                  f"expected {ciphertext_bytes(sender, recipient)}")
        for recipient, blob in shares.items():
            self.outbox.setdefault(recipient, {})[sender] = blob
            self.bytes_received += len(blob)

    def close_shares(self, shared: list[str]) -> None:
        self.holders = sorted(shared)
        # add_shares is all or nothing, so every sender is a holder; the boxes of clients that
        # advertised keys but sent no shares are never fetched.
        self.outbox = {r: box for r, box in self.outbox.items() if r in set(self.holders)}

    def inbox(self, recipient: str) -> dict[str, bytes]:
        return dict(self.outbox.get(recipient, {}))

    def add_masked(self, client_id: str, masked: np.ndarray) -> None:
        if len(masked) != self.length:
            raise SecAggError(f"a masked update has {self.length} elements, client {client_id}'s {len(masked)}")
        self.masked_sum += np.asarray(masked, np.uint64)
        self.masked.add(client_id)

    def close_masked(self) -> None:
        self.survivors = sorted(self.masked)
        self.dropped = sorted(set(self.holders) - self.masked)
        self.outbox = {}

    def add_reveal(self, client_id: str, seed_shares: dict[str, bytes], key_shares: dict[str, bytes]) -> None:
        if set(seed_shares) != set(self.survivors) or set(key_shares) != set(self.dropped):
            raise SecAggError(f"client {client_id} must reveal self-mask shares of exactly the {len(self.survivors)} "
                              f"survivors and key shares of exactly the {len(self.dropped)} dropped clients")
        for share in (*seed_shares.values(), *key_shares.values()):
            if len(share) != SHARE_BYTES:
                raise SecAggError(f"client {client_id} revealed a share of {len(share)} bytes, not {SHARE_BYTES}")
        x = share_x(self.order, client_id)
        for owner, share in seed_shares.items():
            self.seed_shares.setdefault(owner, {})[x] = share
        for owner, share in key_shares.items():
            self.key_shares.setdefault(owner, {})[x] = share
        self.revealed.add(client_id)
        self.bytes_received += SHARE_BYTES * (len(seed_shares) + len(key_shares))

    def unmask(self) -> np.ndarray:
        """sum_{U3} x_u in the ring, once ``threshold`` survivors revealed."""
        if len(self.revealed) < self.threshold:
            raise SecAggError(f"{len(self.revealed)} clients revealed shares, the threshold is {self.threshold}")
        total = self.masked_sum.copy()
        for survivor in self.survivors:
            seed = shamir_combine(self.seed_shares[survivor], self.threshold)
            total -= expand_mask(_derive(seed, self.context, b"self"), self.length)
        peers = {s: self.keys[s].mask_public for s in self.survivors}
        for gone in self.dropped:
            key = X25519PrivateKey.from_private_bytes(shamir_combine(self.key_shares[gone], self.threshold))
            if public_bytes(key) != self.keys[gone].mask_public:
                raise SecAggError(f"the key shares of dropped client {gone} do not rebuild its advertised key")
            # Each survivor v added sign(v, gone) * PRG(s_v,gone); the dropped client's own signed sum over the
            # survivors is exactly minus that, so adding it cancels them.
            total += signed_mask_sum(gone, key, peers, self.context, self.length)
        self.seed_shares, self.key_shares = {}, {}
        return total
