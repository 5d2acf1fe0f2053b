"""DeepNode: an open AI marketplace on your LAN, recorded on a small signed SQLite chain."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 5  # 2: the mutual handshake and signed peer requests; 3: reveals with
# standard errors (powr.reveal `errors`) and task inputs with decoding options; 4: ticket books
# (`task.book`), whose block hash draws each task's miners; 5: books reserve slots × max_price
# of the escrow
