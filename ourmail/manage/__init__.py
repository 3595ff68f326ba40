"""Managing the server's accounts, shared by the ``ourmail`` commands (``ourmail/admin/``) and
the admin console (``ourmail/web/adminpages.py``, through ``ourmail/interfaces.py``): the
account changes, the sorted index of users the console lists, and the audit log."""
