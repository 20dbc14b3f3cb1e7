"""One chain at run time: a call's path top to bottom (`runtime`: `ChainRuntime`), carried
to an answer over upstreams (`failover`), the head tracker polling them (`head_tracker`),
answers checked before they are served (`verifier`), transactions broadcast (`broadcast`),
filters the gateway keeps (`filters`), wide log ranges in parts (`getlogs`), subscription
feeds (`feeds`) and the reorg walk they share (`reorg_walk`). May import every layer
below: `storage`, `upstream`, `consensus`, `verify`, `rpc`, `config`.
"""
