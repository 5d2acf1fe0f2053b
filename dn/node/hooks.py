"""The one test hook: how a test harness changes what a node does, without test branches in the
production modules.

Set `DN_TEST_HOOK` to `package.module:function` and every node service started in that process
calls `function(service)` once, after it is built and before it serves. The function may swap
the strategies a node exposes for that purpose, and nothing else is meant to be swapped:

- `service.miner.behaviour` (`dn.node.market.behaviour.Behaviour`): how the miner acts at the
  points where a dishonest miner would act otherwise (the tokens it streams, the key it signs
  with, whether it computes its check);
- `service.network.links` (`dn.node.p2p.peers.LinkPolicy`): which URLs the node talks to.

Unset (always, outside tests), nothing is imported and nothing changes. The harness's own hook is
`tests/functional/hooks.py`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from dn.errors import NodeError

HOOK_ENV = "DN_TEST_HOOK"


def install(service: Any) -> None:
    """Call the hook named by $DN_TEST_HOOK on `service`, if one is named."""
    spec = os.environ.get(HOOK_ENV, "").strip()
    if not spec:
        return
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name or "install")
    except (ImportError, AttributeError) as exc:
        raise NodeError(f"{HOOK_ENV}={spec!r} names no importable function: {exc}") from None
    function(service)
