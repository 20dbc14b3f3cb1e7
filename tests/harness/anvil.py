"""Real anvil nodes for tests: single nodes and clusters that mine identical chains.

Nodes started with the same `--chain-id`, `--timestamp` and `--no-mining` share a genesis
block, and `evm_mine` with the same explicit timestamp (and the same pending transactions)
produces the same block on each of them. `AnvilCluster` relies on this: the timestamp of a
block is a pure function of its height, so a node that lags and mines the missing heights
later ends up with exactly the same hashes as the others.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from eth_account import Account
from eth_utils import keccak

from tests.harness.tools import anvil_binary, free_port

DEFAULT_CHAIN_ID = 31337
DEFAULT_GENESIS_TIMESTAMP = 1_700_000_000
BLOCK_INTERVAL_SECONDS = 12
# A forked block gets its canonical timestamp plus this: enough to change the hash, and
# still below the next canonical timestamp so the node can go on mining afterwards.
FORK_TIMESTAMP_SKEW = 1

# anvil's first two default dev accounts (the well-known "test test ... junk" mnemonic),
# funded with 10000 ETH each at genesis.
DEV_KEYS: tuple[str, str] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
)
DEV_ADDRESSES: tuple[str, str] = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
)

# Generous fee caps: the base fee starts at 1 gwei and only falls while blocks stay empty.
DEFAULT_MAX_FEE_PER_GAS = 10 * 10**9
DEFAULT_MAX_PRIORITY_FEE_PER_GAS = 10**9
DEFAULT_GAS_LIMIT = 200_000
# What anvil answers when eth_sendRawTransaction repeats a transaction it already has.
ALREADY_IMPORTED_CODE = -32003

_STARTUP_TIMEOUT_SECONDS = 10.0
_STARTUP_POLL_SECONDS = 0.02
_RECEIPT_POLL_SECONDS = 0.005
_RPC_TIMEOUT_SECONDS = 10.0

BlockId = int | str

_PROC_NET_TCP = Path("/proc/self/net/tcp")
_CAN_INSPECT_SOCKETS = _PROC_NET_TCP.exists()
_TCP_LISTEN_STATE = "0A"
_PR_SET_PDEATHSIG = 1
_CAN_SET_PDEATHSIG = sys.platform == "linux"
_LIBC = ctypes.CDLL(None, use_errno=True) if _CAN_SET_PDEATHSIG else None


def _die_with_parent() -> None:
    """Runs in the forked child: SIGTERM anvil when the thread that spawned it dies.

    Keeps a killed or crashed test run from leaving orphaned nodes behind. Note the kernel
    ties this to the spawning *thread*, so spawn nodes from a long-lived thread.
    """
    assert _LIBC is not None
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _listening_ports(pid: int) -> set[int]:
    """TCP ports on which process `pid` listens (Linux /proc)."""
    try:
        fd_dir = Path(f"/proc/{pid}/fd")
        links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()  # exited meanwhile
    socket_inodes = {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
    ports = set()
    for row in table:
        fields = row.split()
        local_address, state, inode = fields[1], fields[3], fields[9]
        if state == _TCP_LISTEN_STATE and inode in socket_inodes:
            ports.add(int(local_address.rsplit(":", 1)[1], 16))
    return ports


class JsonRpcError(RuntimeError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.method = method
        self.code: int | None = error.get("code")
        self.error_message: str = str(error.get("message", ""))
        self.data: Any = error.get("data")
        super().__init__(f"{method} failed: {json.dumps(error)}")


class AnvilStartError(RuntimeError):
    """anvil exited or never answered during startup."""


def canonical_timestamp(genesis_timestamp: int, height: int) -> int:
    """The timestamp a cluster gives the block at `height` on its canonical chain."""
    return genesis_timestamp + BLOCK_INTERVAL_SECONDS * height


def sign_transaction(
    *,
    chain_id: int,
    nonce: int,
    to: str | None = None,
    data: str | bytes = b"",
    value: int = 0,
    key: str = DEV_KEYS[0],
    gas: int = DEFAULT_GAS_LIMIT,
    max_fee_per_gas: int = DEFAULT_MAX_FEE_PER_GAS,
    max_priority_fee_per_gas: int = DEFAULT_MAX_PRIORITY_FEE_PER_GAS,
) -> str:
    """A signed EIP-1559 transaction as 0x-hex, ready for eth_sendRawTransaction.

    Everything is explicit (no node is asked for nonce or fees) so the same raw bytes can
    be broadcast to every node of a cluster, keeping their blocks identical.
    """
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "gas": gas,
        "maxFeePerGas": max_fee_per_gas,
        "maxPriorityFeePerGas": max_priority_fee_per_gas,
        "value": value,
        "data": data,
    }
    if to is not None:
        tx["to"] = to
    signed = Account.sign_transaction(tx, key)
    return "0x" + bytes(signed.raw_transaction).hex()


def transaction_hash(raw_transaction: str) -> str:
    return "0x" + keccak(hexstr=raw_transaction).hex()


def json_rpc(url: str, method: str, params: Sequence[Any] | None = None) -> Any:
    """One synchronous JSON-RPC call; returns `result` or raises `JsonRpcError`."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params or [])})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=_RPC_TIMEOUT_SECONDS) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise JsonRpcError(method, reply["error"])
    return reply["result"]


class AnvilNode:
    """One anvil subprocess on 127.0.0.1.

    With `automine=False` (the default) transactions stay pending until `mine()`; with
    `automine=True` anvil mines a block per transaction, at wall-clock-derived timestamps,
    which is convenient for a lone node but breaks cluster-wide identical blocks.

    Without an explicit `port`, anvil gets `--port 0` and the port it bound is read from
    /proc, so parallel test runs cannot race for ports. The process is SIGTERMed if the
    thread that spawned it dies, so a killed test run leaves no orphaned nodes.
    """

    def __init__(
        self,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        genesis_timestamp: int = DEFAULT_GENESIS_TIMESTAMP,
        automine: bool = False,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = _STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self.chain_id = chain_id
        self.genesis_timestamp = genesis_timestamp
        self.automine = automine
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("anvil node not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, port: int) -> list[str]:
        args = [
            anvil_binary(),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--chain-id",
            str(self.chain_id),
            "--timestamp",
            str(self.genesis_timestamp),
            # anvil does not roll its base fee back on evm_revert, so a reverted node would
            # mine blocks that differ from its peers'; a zero base fee stays zero.
            "--block-base-fee-per-gas",
            "0",
            "--silent",
        ]
        if not self.automine:
            args.append("--no-mining")
        args.extend(self.extra_args)
        return args

    def start(self) -> AnvilNode:
        """Spawn anvil and block until it answers eth_chainId."""
        self.spawn()
        self.wait_until_ready()
        return self

    def spawn(self) -> None:
        """Launch the process without waiting for it (start() = spawn() + wait_until_ready())."""
        if self._process is not None:
            raise RuntimeError("anvil node already started")
        if self._requested_port is not None:
            port = self._requested_port
        elif _CAN_INSPECT_SOCKETS:
            port = 0  # anvil asks the kernel; no window for another process to take it
        else:
            port = free_port()
        # stderr goes to a file rather than a pipe: nobody drains a pipe while anvil runs.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            self.command(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            preexec_fn=_die_with_parent if _CAN_SET_PDEATHSIG else None,
        )
        self._port = port or None

    def wait_until_ready(self) -> None:
        """Block until anvil serves JSON-RPC; on failure it is stopped and stderr reported."""
        process = self._process
        if process is None:
            raise RuntimeError("anvil node not spawned")
        deadline = time.monotonic() + self.startup_timeout
        while True:
            exit_code = process.poll()
            if exit_code is not None:
                stderr = self._read_stderr()
                self._discard_process()
                raise AnvilStartError(
                    f"anvil exited with status {exit_code} during startup: {stderr}"
                )
            if self._answers_as_own_process(process.pid):
                return
            if time.monotonic() > deadline:
                stderr = self._read_stderr()
                self.stop()
                raise AnvilStartError(
                    f"anvil did not answer within {self.startup_timeout}s "
                    f"(port {self._port}): {stderr}"
                )
            time.sleep(_STARTUP_POLL_SECONDS)

    def _answers_as_own_process(self, pid: int) -> bool:
        # Whoever answers on the port must be our process: anvil that lost a port race
        # exits, but not before a poll can reach the process that won it.
        if _CAN_INSPECT_SOCKETS:
            own_ports = _listening_ports(pid)
            if self._port is None:
                if not own_ports:
                    return False
                self._port = min(own_ports)
            elif self._port not in own_ports:
                return False
        try:
            reported = int(self.rpc("eth_chainId"), 16)
        except (OSError, ValueError):
            return False  # not serving yet
        if reported != self.chain_id:
            self.stop()
            raise AnvilStartError(f"anvil reports chain id {reported}, wanted {self.chain_id}")
        return True

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip() or "(no stderr)"

    def _discard_process(self) -> None:
        self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil, escalating to SIGKILL if it does not exit in `timeout` seconds."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._discard_process()

    def __enter__(self) -> AnvilNode:
        return self if self._process is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- JSON-RPC helpers (synchronous, straight to the node) --

    def rpc(self, method: str, params: Sequence[Any] | None = None) -> Any:
        return json_rpc(self.url, method, params)

    def mine(self, timestamp: int) -> None:
        """Mine one block with an explicit timestamp, including all pending transactions."""
        self.rpc("evm_mine", [timestamp])

    def snapshot(self) -> str:
        """Snapshot the chain state. anvil forgets a snapshot once it is reverted to."""
        snapshot_id: str = self.rpc("evm_snapshot")
        return snapshot_id

    def revert(self, snapshot_id: str) -> None:
        if not self.rpc("evm_revert", [snapshot_id]):
            raise RuntimeError(f"anvil has no snapshot {snapshot_id} (reverting consumes it)")

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block(
        self, block_id: BlockId = "latest", full_transactions: bool = False
    ) -> dict[str, Any]:
        tag = hex(block_id) if isinstance(block_id, int) else block_id
        block: dict[str, Any] | None = self.rpc("eth_getBlockByNumber", [tag, full_transactions])
        if block is None:
            raise LookupError(f"node {self.url} has no block {block_id}")
        return block

    def block_hash(self, block_id: BlockId = "latest") -> str:
        block_hash: str = self.block(block_id)["hash"]
        return block_hash

    def send_raw_transaction(self, raw_transaction: str) -> str:
        tx_hash: str = self.rpc("eth_sendRawTransaction", [raw_transaction])
        return tx_hash

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        receipt: dict[str, Any] | None = self.rpc("eth_getTransactionReceipt", [tx_hash])
        return receipt

    def wait_for_receipt(self, tx_hash: str, timeout: float = 5.0) -> dict[str, Any]:
        """Poll for a receipt: even with automine, anvil answers eth_sendRawTransaction
        before the transaction's block exists."""
        deadline = time.monotonic() + timeout
        while (receipt := self.receipt(tx_hash)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no receipt for {tx_hash} on {self.url} after {timeout}s")
            time.sleep(_RECEIPT_POLL_SECONDS)
        return receipt

    def nonce(self, address: str, block_id: BlockId = "pending") -> int:
        tag = hex(block_id) if isinstance(block_id, int) else block_id
        return int(self.rpc("eth_getTransactionCount", [address, tag]), 16)


class AnvilCluster:
    """N anvil nodes with one genesis, mined in lockstep (or deliberately not).

    Block timestamps follow `canonical_timestamp(genesis, height)`, i.e. T+12, T+24, ...,
    whichever node mines the height and whenever it does, so a lagging node that catches up
    mines exactly the blocks the others did - provided it saw the same transactions, which
    is what `broadcast_raw_transaction` is for.
    """

    def __init__(
        self,
        size: int,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        genesis_timestamp: int = DEFAULT_GENESIS_TIMESTAMP,
        automine: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.chain_id = chain_id
        self.genesis_timestamp = genesis_timestamp
        self.nodes = [
            AnvilNode(
                chain_id=chain_id,
                genesis_timestamp=genesis_timestamp,
                automine=automine,
                extra_args=extra_args,
            )
            for _ in range(size)
        ]

    def start(self) -> AnvilCluster:
        # All processes boot concurrently; then wait for each in turn.
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                node.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> AnvilCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index: int) -> AnvilNode:
        return self.nodes[index]

    def __iter__(self) -> Iterator[AnvilNode]:
        return iter(self.nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def canonical_timestamp(self, height: int) -> int:
        return canonical_timestamp(self.genesis_timestamp, height)

    def heights(self) -> list[int]:
        return [node.block_number() for node in self.nodes]

    def block_hashes(self, block_id: BlockId = "latest") -> list[str]:
        return [node.block_hash(block_id) for node in self.nodes]

    def mine_all(self, count: int = 1) -> None:
        """Mine `count` canonical blocks on every node."""
        self.mine_on(range(len(self.nodes)), count)

    def mine_on(self, indices: Iterable[int], count: int = 1) -> None:
        """Mine `count` canonical blocks on the given nodes only; the rest fall behind."""
        for index in indices:
            node = self.nodes[index]
            height = node.block_number()
            for next_height in range(height + 1, height + count + 1):
                node.mine(self.canonical_timestamp(next_height))

    def catch_up(self, index: int) -> None:
        """Mine canonical blocks on one node until it reaches the cluster's highest head."""
        target = max(self.heights())
        behind = target - self.nodes[index].block_number()
        if behind > 0:
            self.mine_on([index], behind)

    def fork(self, index: int, count: int = 1) -> None:
        """Mine `count` blocks on one node with skewed timestamps.

        From the first of them on, that node's hashes differ from any node that mines the
        same heights canonically; it stays forked for every later block too, because each
        block commits to its parent's hash. Use snapshot_all()/revert_all() to heal it.
        """
        node = self.nodes[index]
        height = node.block_number()
        for next_height in range(height + 1, height + count + 1):
            node.mine(self.canonical_timestamp(next_height) + FORK_TIMESTAMP_SKEW)

    def snapshot_all(self) -> list[str]:
        return [node.snapshot() for node in self.nodes]

    def revert_all(self, snapshot_ids: Sequence[str]) -> None:
        for node, snapshot_id in zip(self.nodes, snapshot_ids, strict=True):
            node.revert(snapshot_id)

    def broadcast_raw_transaction(self, raw_transaction: str) -> str:
        """Submit the same signed transaction to every node that lacks it; returns its hash.

        A transaction that reached only one node (say, through the gateway) makes that
        node's next block differ from the others'; broadcasting it keeps them identical.
        """
        for node in self.nodes:
            try:
                node.send_raw_transaction(raw_transaction)
            except JsonRpcError as error:
                if error.code != ALREADY_IMPORTED_CODE:
                    raise
        return transaction_hash(raw_transaction)
