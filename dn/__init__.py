"""DeepNode: an open AI marketplace on your LAN, recorded on a small signed SQLite chain."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 2  # 2: the mutual handshake and signed peer requests
