"""A tiny hand-assembled test contract (no solc in the toolchain).

Whatever the calldata, the contract emits LOG1(topic=LOG_TOPIC, data=calldata) and returns
uint256 42. That gives tests a cheap eth_call with a known answer and a transaction with a
known log, for checking the gateway's call, receipt and eth_getLogs paths.
"""

from __future__ import annotations

import rlp
from eth_utils import keccak, to_bytes, to_checksum_address

# Opcodes used below (https://www.evm.codes).
_CALLDATASIZE = 0x36
_CALLDATACOPY = 0x37
_CODECOPY = 0x39
_MSTORE = 0x52
_DUP1 = 0x80
_LOG1 = 0xA1
_RETURN = 0xF3
_PUSH1 = 0x60
_PUSH32 = 0x7F

LOG_TOPIC_BYTES = keccak(text="rpcgate.tests.harness.Logged(bytes)")
LOG_TOPIC = "0x" + LOG_TOPIC_BYTES.hex()
RETURN_VALUE = 42
RETURN_DATA = "0x" + RETURN_VALUE.to_bytes(32, "big").hex()


def _push1(value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"PUSH1 operand out of range: {value}")
    return bytes([_PUSH1, value])


def _push32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError("PUSH32 needs exactly 32 bytes")
    return bytes([_PUSH32]) + value


def _assemble_runtime() -> bytes:
    # Stack comments list the top of the stack first.
    return b"".join(
        [
            bytes([_CALLDATASIZE]),  # size
            _push1(0),  # calldata offset, size
            _push1(0),  # memory offset, calldata offset, size
            bytes([_CALLDATACOPY]),  # memory[0:size] = calldata
            _push32(LOG_TOPIC_BYTES),  # topic
            bytes([_CALLDATASIZE]),  # size, topic
            _push1(0),  # offset, size, topic
            bytes([_LOG1]),  # log(memory[0:size], topic)
            _push1(RETURN_VALUE),  # value
            _push1(0),  # offset, value
            bytes([_MSTORE]),  # memory[0:32] = value
            _push1(32),  # size
            _push1(0),  # offset, size
            bytes([_RETURN]),  # return memory[0:32]
        ]
    )


def _assemble_init(runtime: bytes) -> bytes:
    def init_prefix(runtime_offset: int) -> bytes:
        return b"".join(
            [
                _push1(len(runtime)),  # size
                bytes([_DUP1]),  # size, size
                _push1(runtime_offset),  # code offset, size, size
                _push1(0),  # memory offset, code offset, size, size
                bytes([_CODECOPY]),  # memory[0:size] = runtime; leaves size
                _push1(0),  # offset, size
                bytes([_RETURN]),  # deploy memory[0:size]
            ]
        )

    # The runtime starts right after the prefix, whose length does not depend on the
    # offset operand (always a PUSH1), so measure it with a placeholder first.
    prefix = init_prefix(len(init_prefix(0)))
    return prefix + runtime


RUNTIME_BYTES = _assemble_runtime()
INIT_BYTES = _assemble_init(RUNTIME_BYTES)
RUNTIME_CODE = "0x" + RUNTIME_BYTES.hex()
INIT_CODE = "0x" + INIT_BYTES.hex()


def create_address(deployer: str, nonce: int) -> str:
    """Address of the contract that `deployer` creates with a transaction of this nonce."""
    encoded = rlp.encode([to_bytes(hexstr=deployer), nonce])
    return to_checksum_address(keccak(encoded)[-20:])
