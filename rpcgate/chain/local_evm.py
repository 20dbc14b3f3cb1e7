"""eth_calls executed locally over proven state: worker processes running revm
(`evm_worker.py`) and the loopback endpoint they ask for the state they touch.

An execution starts from the accounts, code and slots proven before it. Anything else it
touches (an account, a slot, a block hash, inside a frame that reverts too) revm asks of the
state endpoint, a JSON-RPC server on 127.0.0.1 that exists for the workers alone: the
request is answered from a proof fetched and checked there and then (`StateSource`, the
chain's), so the execution runs over proven state and nothing else, in one pass. An
execution that touches more than `MAX_UNPROVEN` such items, or whose item cannot be
proven, fails: `Unverifiable`, never a result.

Workers start with the first execution and are stopped with the chain. Where pyrevm is not
installed (it has wheels for CPython 3.11 and 3.12 on x86-64 Linux), `available` is False
and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

from rpcgate.verify.calls import BlockEnvironment, CallRequest, Executed

log = structlog.get_logger("rpcgate.verify")

WORKERS = 2  # executions at once; each waits on the proofs it asks for
MAX_UNPROVEN = 256  # items an execution may touch beyond what was proven before it
_READY_S = 20.0  # a worker's start (Python and revm loaded)
_LINE_LIMIT = 64 * 1024 * 1024  # one answer, its output included


class Unproven(Exception):
    """What the execution touched could not be proven (or too much of it)."""


@dataclass(frozen=True)
class ProvenAccount:
    balance: int
    nonce: int
    code: bytes


class StateSource(Protocol):
    """Proves what an execution touches, at the block it runs in."""

    async def account(self, address: str) -> ProvenAccount: ...

    async def slot(self, address: str, slot: int) -> int: ...

    async def header(self, number: int) -> dict[str, Any]: ...


@dataclass
class _Session:
    source: StateSource
    asked: dict[tuple[str, ...], asyncio.Future[Any]] = field(default_factory=dict)
    failure: str | None = None


class LocalEvm:
    def __init__(self, chain_id: int, chain: str = "") -> None:
        self.chain_id = chain_id
        self.chain = chain
        self.available: bool | None = None  # None until the first worker has started
        self.unavailable_reason = ""
        self._sessions: dict[str, _Session] = {}
        self._idle: asyncio.Queue[_Worker] | None = None
        self._workers: list[_Worker] = []
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._starting: asyncio.Lock | None = None

    async def ready(self) -> bool:
        """Whether executions can run here (the workers start with the first question)."""
        await self._started()
        return bool(self.available)

    async def execute(
        self,
        environment: BlockEnvironment,
        call: CallRequest,
        accounts: dict[str, ProvenAccount],
        slots: dict[str, dict[int, int]],
        source: StateSource,
        timeout: float,
    ) -> Executed:
        """The call executed over `accounts` and `slots` and what `source` proves of the
        rest. Raises Unproven when that is not enough to run it."""
        await self._started()
        if not self.available:
            raise Unproven(f"no local EVM: {self.unavailable_reason}")
        assert self._idle is not None
        token = secrets.token_hex(16)
        session = self._sessions[token] = _Session(source)
        request = {
            "url": f"{self._url}/{token}",
            "chain_id": self.chain_id,
            "gas": call.gas if call.gas is not None else environment.gas_limit,
            "block": {
                "number": environment.number,
                "coinbase": environment.coinbase,
                "timestamp": environment.timestamp,
                "difficulty": environment.difficulty,
                "prevrandao": environment.prevrandao.hex(),
                # eth_call charges no fee unless the call names a price (then BASEFEE is
                # the block's); revm charges none either way here (gas price 0).
                "basefee": environment.basefee if call.fee_named else 0,
                "gas_limit": environment.gas_limit,
                "excess_blob_gas": environment.excess_blob_gas,
            },
            "accounts": {
                address: {"balance": hex(a.balance), "nonce": a.nonce, "code": a.code.hex()}
                for address, a in accounts.items()
            },
            "slots": {
                address: {hex(s): hex(v) for s, v in values.items()}
                for address, values in slots.items()
                if address in accounts
            },
            "call": {
                "caller": call.caller,
                "to": call.to,
                "data": call.data.hex(),
                "value": hex(call.value),
            },
        }
        worker = await self._idle.get()
        try:
            answer = await worker.run(request, timeout)
        finally:
            self._sessions.pop(token, None)
            self._idle.put_nowait(worker)
        if session.failure is not None:
            raise Unproven(session.failure)
        if answer["outcome"] == "failed":
            raise Unproven(f"the local EVM failed: {answer.get('reason', '')}")
        return Executed(
            outcome=answer["outcome"],
            output=bytes.fromhex(answer["output"]),
            gas_used=int(answer["gas_used"]),
            reason=str(answer.get("reason", "")),
            proven_on_touch=len(session.asked),
        )

    async def close(self) -> None:
        for worker in self._workers:
            await worker.stop()
        self._workers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.available = None

    # -- the workers and the state endpoint, started with the first execution --

    async def _started(self) -> None:
        if self.available is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.available is not None:
                return
            workers = [_Worker() for _ in range(WORKERS)]
            reasons = await asyncio.gather(*(w.start() for w in workers))
            if any(reason is not None for reason in reasons):
                for worker in workers:
                    await worker.stop()
                self.available = False
                self.unavailable_reason = next(r for r in reasons if r is not None)
                log.warning(
                    "local_evm_unavailable",
                    chain=self.chain,
                    reason=self.unavailable_reason,
                    effect="eth_call answers are not verified by execution",
                )
                return
            app = web.Application(client_max_size=1024 * 1024)
            app.router.add_post("/{token}", self._answer)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self._url = f"http://127.0.0.1:{port}"
            self._workers = workers
            self._idle = asyncio.Queue()
            for worker in workers:
                self._idle.put_nowait(worker)
            self.available = True

    async def _answer(self, request: web.Request) -> web.Response:
        """A worker's question about the state (revm's fork database asks it)."""
        session = self._sessions.get(request.match_info["token"])
        if session is None:
            raise web.HTTPNotFound()
        body = orjson.loads(await request.read())
        calls = body if isinstance(body, list) else [body]
        answers = await asyncio.gather(*(self._one(session, call) for call in calls))
        return web.Response(
            body=orjson.dumps(answers if isinstance(body, list) else answers[0]),
            content_type="application/json",
        )

    async def _one(self, session: _Session, call: dict[str, Any]) -> dict[str, Any]:
        method, params = call.get("method"), call.get("params") or []
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": call.get("id")}
        try:
            reply["result"] = await self._state(session, str(method), params)
        except Exception as exc:  # told to the execution as an error: it fails, not guesses
            if session.failure is None:
                session.failure = str(exc) if isinstance(exc, Unproven) else repr(exc)
            reply["error"] = {"code": -32000, "message": "not proven"}
        return reply

    async def _state(self, session: _Session, method: str, params: list[Any]) -> Any:
        source = session.source
        if method in ("eth_getBalance", "eth_getTransactionCount", "eth_getCode"):
            address = str(params[0]).lower()
            account: ProvenAccount = await self._once(
                session, ("account", address), lambda: source.account(address)
            )
            if method == "eth_getBalance":
                return hex(account.balance)
            if method == "eth_getTransactionCount":
                return hex(account.nonce)
            return "0x" + account.code.hex()
        if method == "eth_getStorageAt":
            address, slot = str(params[0]).lower(), int(params[1], 16)
            value: int = await self._once(
                session, ("slot", address, hex(slot)), lambda: source.slot(address, slot)
            )
            return f"0x{value:064x}"
        if method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            return await self._once(session, ("block", hex(number)), lambda: source.header(number))
        raise Unproven(f"the local EVM asked {method}, which is not state")

    async def _once(
        self, session: _Session, key: tuple[str, ...], prove: Callable[[], Awaitable[Any]]
    ) -> Any:
        """One proof per item an execution touches (revm asks an account's balance, nonce
        and code at once)."""
        known = session.asked.get(key)
        if known is None:
            if len(session.asked) >= MAX_UNPROVEN:
                raise Unproven(f"the call touches more than {MAX_UNPROVEN} unproven items")
            known = session.asked[key] = asyncio.ensure_future(prove())
        return await asyncio.shield(known)


class _Worker:
    """One worker process, one execution at a time."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._sent = 0

    async def start(self) -> str | None:
        """None once it runs; why not, otherwise."""
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rpcgate.chain.evm_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                limit=_LINE_LIMIT,
            )
            assert self._process.stdout is not None
            line = await asyncio.wait_for(self._process.stdout.readline(), _READY_S)
            ready = orjson.loads(line) if line else {"ready": False, "reason": "it exited"}
        except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            return f"the EVM worker did not start ({exc!r})"
        if not ready.get("ready"):
            return f"pyrevm is not installed ({ready.get('reason', '')})"
        return None

    async def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._process is None or self._process.returncode is not None:
            reason = await self.start()
            if reason is not None:
                raise Unproven(reason)
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        self._sent += 1
        request["id"] = self._sent
        process.stdin.write(orjson.dumps(request) + b"\n")
        try:
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), timeout)
        except (TimeoutError, ConnectionError) as exc:
            await self.stop()  # an execution that runs on is ended with its process
            raise Unproven(f"the local execution did not end in {timeout:.1f}s") from exc
        if not line:
            await self.stop()
            raise Unproven("the EVM worker exited")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
