"""The out-of-office reply the server sends for a user who is away (RFC 3834, modelled on the
Sieve vacation extension, RFC 5230): the user's settings (:mod:`.settings`, kept in
``IPreferences`` under ``vacation``), the rules for whom to answer and the reply itself
(:mod:`.rules`), the durable record of whom was answered when (:mod:`.record`) and the
responder delivery calls (:mod:`.responder`, an ``IAutoResponder``).
"""
