"""Replicas agree: the highest consensus head any replica has served, shared through Redis.

Behind one Service, a client's consecutive calls land on different replicas, and each
replica tracks heads on its own schedule. So that `eth_blockNumber` never goes back between
two of them, a replica writes each new consensus head to Redis (only if higher: one atomic
script) and publishes it *before* it serves it; every replica subscribes. A replica that
hears of a head above its own polls at once and, until that poll is decided, holds calls
rather than answer from its older head. It then serves that head when one of its own voters
holds that block (the head tracker's never-backwards rule, with the shared head as the
floor), and its own head otherwise (the block is gone: a reorg). Without Redis, the
guarantee holds within one replica only.

Redis never breaks serving (the one outage policy of `redis_client`): every operation has
the cache's short timeout, and the subscription is made again every second. When Redis
becomes unreachable (a Sentinel failover takes a few seconds) the replicas hold their served
head where they last agreed for `cache.shared_head_hold_s` (raised only to a head another
replica had offered, where a voter holds it), then each goes on alone. When it comes back
the replicas do not find it at the same moment (each tries again a second after its last
failure): one that found it holds a little longer (`SETTLE_S`) without offering, long enough
for the others to find it and subscribe, so that the first head offered after the outage
is heard by all and none of them serves ahead of a replica still on the old head. A head
offered meanwhile by another replica ends the wait (`stance`). So a replica finds Redis
again by reading (`look_again`), never by the offer itself: an offer that happened to be
the first operation to reach the new primary was published to nobody and served at once,
beside a replica still holding the old head. A subscription made again reads the stored
heads too, since what was published while there was none is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rpcgate.consensus.heads import Block
from rpcgate.rpc.background import Background
from rpcgate.storage.redis_client import RESUBSCRIBE_S, RETRY_S, RedisLink

# After an outage: how long a replica that found Redis again waits for the others (each
# finds it within RETRY_S of the first, and has subscribed again within RESUBSCRIBE_S of
# that), with a second's margin.
SETTLE_S = RETRY_S + RESUBSCRIBE_S + 1.0

# KEYS[1]: the chain's key; ARGV: number, hash, parent hash, genesis hash, channel. Sets and
# publishes a head higher than the one stored, or any head of another life of the chain id
# (another genesis: a devnet reset, or another chain sharing the id), so a chain that
# restarted is not held to a height from its previous life. A day's TTL.
_OFFER = """
local stored = redis.call('GET', KEYS[1])
if stored then
  local number, genesis = string.match(stored, '^(%d+):[^:]*:[^:]*:?([^:]*)$')
  if number and tonumber(number) >= tonumber(ARGV[1]) and genesis == ARGV[4] then
    return 0
  end
end
local value = ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4]
redis.call('SET', KEYS[1], value, 'EX', 86400)
redis.call('PUBLISH', ARGV[5], value)
return 1
"""


def stance(
    outage_s: float | None, recovered_s: float | None, hold_s: float, heard_higher: bool
) -> str:
    """Whether a replica's served head follows its consensus through Redis ("shared"),
    stays where it is ("hold": Redis unreachable for less than `hold_s`; "settle": Redis
    found again less than `SETTLE_S` ago, and no other replica has offered a higher head
    since), or follows its consensus without Redis ("alone": the hold is over).
    `outage_s`: how long Redis has been unreachable (None: it is up); `recovered_s`: how
    long ago it was found again (None: no outage yet)."""
    if outage_s is not None:
        return "hold" if outage_s < hold_s else "alone"
    settling = recovered_s is not None and recovered_s < min(SETTLE_S, hold_s)
    return "settle" if settling and not heard_higher else "shared"


def encode(block: Block, genesis: str | None = None) -> str:
    return f"{block.number}:{block.hash}:{block.parent_hash}:{genesis or ''}"


def decode(value: bytes | str) -> tuple[Block, str | None] | None:
    """A shared head and the genesis of its chain (None where the writer did not know it)."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split(":")
    if len(parts) not in (3, 4) or not parts[0].isdigit():
        return None
    genesis = parts[3] if len(parts) == 4 and parts[3] else None
    return Block(int(parts[0]), parts[1], parts[2]), genesis


Listener = Callable[[Block, str | None], None]


class SharedHeads:
    """One subscription, over the gateway's one Redis client, for every chain."""

    def __init__(self, link: RedisLink, hold_s: float = 0.0) -> None:
        self.link = link
        # Redis unreachable: how long a replica holds its served head where the replicas
        # last agreed (rather than serve a head no other replica may know) before it goes
        # on alone; a Sentinel failover takes a few seconds.
        self.hold_s = hold_s
        self.prefix = link.prefix
        self._offer = link.script(_OFFER)
        self._listeners: dict[str, Listener] = {}  # channel -> tracker callback
        self._following = Background("shared-heads", self._follow)

    @property
    def up(self) -> bool:
        return self.link.up

    def key(self, chain_id: int) -> str:
        return f"{self.prefix}{chain_id}:served-head"

    def listen(self, chain_id: int, listener: Listener) -> None:
        self._listeners[self.key(chain_id)] = listener

    async def start(self) -> None:
        """Reads the heads stored now, then follows new ones in the background."""
        await self._read_stored()
        self._following.start()

    async def close(self) -> None:
        await self._following.stop()

    async def offer(self, chain_id: int, block: Block, genesis: str | None = None) -> bool:
        """Stores and announces `block` if it is higher than the shared head (or the shared
        head is of another life of the chain id); whether Redis was reached. Never while
        Redis is thought down: the offer is not how a replica finds it again
        (`look_again`)."""
        if not self.link.up:
            return False
        key = self.key(chain_id)
        args = [*encode(block, genesis).split(":"), key]
        done = await self.link.run("offer served head", lambda: self._offer(keys=[key], args=args))
        return done is not None

    def stance(self, heard_higher: bool) -> str:
        """What the served head does now (see `stance`)."""
        return stance(self.link.outage_s(), self.link.recovered_s(), self.hold_s, heard_higher)

    async def look_again(self, chain_id: int) -> None:
        """Redis thought down: whether it is back (asked at most once per `RETRY_S`), by
        reading the chain's shared head, heard if higher, before the stance is judged. A
        replica that found Redis through its offer would have announced a head that the
        replicas still looking for Redis cannot hear, and served it beside them."""
        if not self.link.up:
            await self._read_stored([self.key(chain_id)])

    async def _read_stored(self, channels: list[str] | None = None) -> None:
        """The heads stored now, heard as if published (a head's key is its channel)."""
        for channel in list(self._listeners) if channels is None else channels:
            stored = await self.link.run("get served head", self.link.client.get(channel))
            listener = self._listeners.get(channel)
            shared = decode(stored) if isinstance(stored, bytes | str) else None
            if listener is not None and shared is not None:
                listener(*shared)

    async def _follow(self) -> None:
        await self.link.follow(
            "served heads", lambda: list(self._listeners), self._deliver, self._read_stored
        )

    def _deliver(self, message: dict[str, Any]) -> None:
        channel, data = message.get("channel"), message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode()
        listener = self._listeners.get(str(channel))
        shared = decode(data) if isinstance(data, bytes | str) else None
        if listener is not None and shared is not None:
            listener(*shared)
