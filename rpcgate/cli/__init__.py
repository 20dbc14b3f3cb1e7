"""The `rpcgate` command (`commands`: serve, check, config validate) and `rpcgate check`'s
probe of every upstream (`probe`). The top: may import every layer.
"""
