"""Pure decisions over plain data: the consensus head and each upstream's state
(`heads`), what block a call is about (`pinning`), which upstream gets the next attempt
(`routing`), each upstream's recent behaviour (`health`), hedges (`hedging`), quorum
verdicts (`quorum`) and outage drills (`drills`). No I/O; tested with tables. May import
`rpc` and `config`.
"""
