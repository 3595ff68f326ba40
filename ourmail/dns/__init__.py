"""The DNS records a mail domain needs, and checking them live (issue 17 point 2,
docs/dns.md).

* :mod:`ourmail.dns.records`: the records to publish, computed from a :class:`MailSetup`;
* :mod:`ourmail.dns.zone`: the same as a BIND zone-file snippet;
* :mod:`ourmail.dns.lookup`: asynchronous queries (``twisted.names``) that follow CNAMEs and
  tell NXDOMAIN, "no data", time-outs and server failures apart;
* :mod:`ourmail.dns.check`: each expected record checked against DNS: pass, fail or warn;
* :mod:`ourmail.dns.fromsettings`: the :class:`MailSetup` of a domain served here.

This package imports no protocol, no store and no web module, so the admin console's page
and ``ourmail dns`` can both use it.
"""
