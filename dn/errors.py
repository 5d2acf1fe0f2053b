"""Every error DeepNode raises on purpose, in one tree.

    DNError                      exit 1, HTTP 400
    ├── InputError               bad user input (a malformed address, amount, option)   exit 2
    │   ├── InvalidAddress
    │   └── InvalidAmount
    ├── EncodingError            a value that canonical JSON refuses (floats, huge ints)
    ├── WalletError              keystore problems                                      exit 3
    │   ├── WalletNotFound                                                              HTTP 404
    │   ├── WalletExists
    │   ├── WrongPassword
    │   ├── KeystoreCorrupt      tampered, truncated or unreadable keystore
    │   └── KeystoreInsecure     a keystore readable by others
    ├── ChainError               chain data problems                                    exit 4
    │   ├── InvalidTx            carries a short machine-readable `reason`              HTTP 422
    │   ├── InvalidBlock         carries a `reason`                                     HTTP 422
    │   ├── GenesisError
    │   └── StoreError           the SQLite store is missing or damaged                 HTTP 500
    ├── NotFound                 no such block, transaction, account, wallet            HTTP 404
    ├── NodeError                a node that cannot be reached or answered badly        exit 5
    ├── PayloadTooLarge                                                                 HTTP 413
    ├── Forbidden                a request refused from this sender (banned, link cut,  HTTP 403
    │   │                        not a member of a keyed network)
    │   ├── Unauthenticated      a peer-to-peer request no member signed                HTTP 401
    │   ├── KeyRefused           an API key unknown, malformed, revoked or expired      HTTP 401
    │   ├── RateLimited          too many unauthenticated requests from one address     HTTP 429
    │   └── QuotaExhausted       an API key whose budget cannot cover the query         HTTP 429
    ├── HandshakeError           a peer handshake reply we refuse; carries a `reason`   HTTP 403
    ├── ModelError               a model file that is missing, not GGUF, damaged or     exit 6
    │                            does not match its hash; carries a `reason`            HTTP 422
    └── TaskError                a query that cannot be served or settled (no miner,    exit 7
        │                        a miner that stalls or lies, price too low); `reason`  HTTP 409
        └── Busy                 every slot of the model is taken now; try another      HTTP 503
                                 miner, or again after `retry_after` seconds

The CLI maps these to a message and an exit code in `dn/cli/main.py`; the HTTP API maps them to a
status and a JSON body in `dn/node/http/app.py`. Nothing else catches them to print.
"""

from __future__ import annotations


class DNError(Exception):
    """Base of every deliberate DeepNode error."""

    exit_code = 1
    http_status = 400
    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def to_json(self) -> dict[str, str]:
        return {"error": type(self).__name__, "reason": self.reason, "message": self.message}


class InputError(DNError):
    """The user gave a value we cannot use."""

    exit_code = 2
    reason = "bad-input"


class InvalidAddress(InputError):
    """Not a valid `dn1…` address (wrong prefix, checksum, length or characters)."""

    reason = "bad-address"


class InvalidAmount(InputError):
    """Negative, too large, too precise or not a number."""

    reason = "bad-amount"


class EncodingError(DNError):
    """A value canonical JSON does not allow (floats, integers out of range, unknown types)."""

    reason = "bad-encoding"


class WalletError(DNError):
    """Something is wrong with a wallet or its keystore file."""

    exit_code = 3
    reason = "wallet"


class WalletNotFound(WalletError):
    """No wallet of that name in `$DN_HOME/wallets/`."""

    http_status = 404
    reason = "wallet-not-found"


class WalletExists(WalletError):
    """A wallet of that name exists already; we never overwrite one."""

    reason = "wallet-exists"


class WrongPassword(WalletError):
    """The password does not open this keystore."""

    reason = "wrong-password"


class KeystoreCorrupt(WalletError):
    """The keystore was changed, truncated or is not a keystore at all."""

    reason = "keystore-corrupt"


class KeystoreInsecure(WalletError):
    """The keystore or its folder can be read by other users."""

    reason = "keystore-insecure"


class ChainError(DNError):
    """Chain data that breaks the rules."""

    exit_code = 4
    http_status = 422
    reason = "chain"


class InvalidTx(ChainError):
    """A transaction that is rejected; `reason` names the rule it broke."""

    reason = "invalid-tx"


class InvalidBlock(ChainError):
    """A block that is rejected; `reason` names the rule it broke."""

    reason = "invalid-block"


class GenesisError(ChainError):
    """A genesis file that is malformed or does not match the chain."""

    reason = "bad-genesis"


class StoreError(ChainError):
    """The chain store is missing, locked or damaged."""

    http_status = 500
    reason = "store"


class NotFound(DNError):
    """No such block, transaction, account or object."""

    http_status = 404
    reason = "not-found"


class NodeError(DNError):
    """A node could not be reached, or answered with an error."""

    exit_code = 5
    http_status = 502
    reason = "node"


class PayloadTooLarge(DNError):
    """A request body above the node's limit."""

    http_status = 413
    reason = "too-large"


class Forbidden(DNError):
    """A request this node refuses to take from its sender (a banned peer, a cut link)."""

    http_status = 403
    reason = "forbidden"


class Unauthenticated(Forbidden):
    """A request to a peer-to-peer route of a node with a network key that carries no valid,
    fresh signature: handshake first, then sign each request (dn/node/http/guard.py)."""

    http_status = 401
    reason = "unauthenticated"


class KeyRefused(Forbidden):
    """An API key (`dn apikey create`) that this node does not know, or that was revoked or has
    expired; the same answer for each, so a guess learns nothing."""

    http_status = 401
    reason = "invalid_api_key"  # OpenAI's code for the same refusal


class QuotaExhausted(Forbidden):
    """An API key whose budget left cannot cover the most this query may cost."""

    http_status = 429
    reason = "insufficient_quota"  # OpenAI's code for an account out of credit


class RateLimited(Forbidden):
    """Too many requests that no peer signed, from one address, in a short time: they cost no
    one standing, so they are rationed instead. Retry after `retry_after` seconds.

    Also, per address: handshake openings past their ration (`rate-limited`,
    dn/node/p2p/members.py), and API keys after too many refused ones (`rate_limited`, OpenAI's
    spelling, dn/node/market/apikeys.py)."""

    http_status = 429
    reason = "rate-limited"
    retry_after = 1


class HandshakeError(DNError):
    """A peer's handshake reply or finish that we refuse; `reason` says why (`bad-hello`,
    `bad-finish`, `wrong-challenge`, `wrong-caller`, `wrong-peer`, `bad-signature`, `self`,
    `wrong-protocol`, `wrong-network-key`, `wrong-genesis`)."""

    http_status = 403
    reason = "handshake"


class ModelError(DNError):
    """A model file we cannot use: unknown name, not GGUF, truncated, wrong size or hash, or one
    llama.cpp cannot load; `reason` says which."""

    exit_code = 6
    http_status = 422
    reason = "model"


class TaskError(DNError):
    """A query that cannot be served or settled; `reason` names what went wrong
    (`no-miner`, `one-miner`, `miner-timeout`, `miner-lied`, `price-too-low`, …)."""

    exit_code = 7
    http_status = 409
    reason = "task"


class Busy(TaskError):
    """The miner serves as many sequences of this model as it has slots (`dn mine --slots`):
    refused at once rather than queued. Not a fault: a gateway tries the next eligible miner."""

    http_status = 503
    reason = "busy"
    retry_after = 1  # seconds, for the Retry-After header
