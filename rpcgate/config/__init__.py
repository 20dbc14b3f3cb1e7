"""Settings: the typed schema (`typed`: dataclass fields with their defaults and
documentation), every setting of rpcgate and its validation and loading (`settings`), the
providers' presets (`presets`) and the zero-config default (`default.yaml`). Pure: reads
files and the environment only when asked to load one. Imports nothing else of rpcgate; every
other layer may import it.
"""
