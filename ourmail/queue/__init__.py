"""The outbound queue: durable, retried delivery to other servers, and DSNs.

``files`` (the queue on disk), ``runner`` (:class:`~ourmail.queue.runner.OutboundQueue`, the
schedule and the connections per destination), ``mx`` (where a domain's mail goes), ``remote``
(opening a session to an MX host or the smart host), ``client`` (the SMTP client) and ``dsn``
(RFC 3464 reports).  The SMTP side reaches the queue only through
:class:`~ourmail.interfaces.IOutboundQueue`, and the queue reaches local delivery only through
:class:`~ourmail.interfaces.ILocalDelivery`; neither imports the other.
"""
