#!/bin/sh
# The container's one process: `twistd -n ourmail` (logging to stdout) on the volume
# /var/lib/ourmail, with the environment's settings as its options (docs/deploy.md#container):
#   OURMAIL_DOMAIN    mail domains, separated by spaces (the first is the primary one)
#   OURMAIL_HOSTNAME  the host name (greetings, the self-signed certificate)
#   OURMAIL_PORTS     standard or unprivileged (2525, 2587...); unset: `ports` in ourmail.toml,
#                     else standard (the interpreter holds CAP_NET_BIND_SERVICE)
#   OURMAIL_CONFIG    a configuration file elsewhere than /var/lib/ourmail/ourmail.toml
#   OURMAIL_LOG_FORMAT  text or json
# Unset ones leave the choice to ourmail.toml.  Arguments go to `twistd ourmail` after these.
set -euf  # -f: the domains are split on spaces, never globbed
set -- --data /var/lib/ourmail "$@"
if [ -n "${OURMAIL_PORTS:-}" ]; then set -- "$@" --ports "$OURMAIL_PORTS"; fi
for domain in ${OURMAIL_DOMAIN:-}; do
    set -- "$@" --domain "$domain"
done
if [ -n "${OURMAIL_HOSTNAME:-}" ]; then set -- "$@" --hostname "$OURMAIL_HOSTNAME"; fi
if [ -n "${OURMAIL_CONFIG:-}" ]; then set -- "$@" --config "$OURMAIL_CONFIG"; fi
if [ -n "${OURMAIL_LOG_FORMAT:-}" ]; then set -- "$@" --log-format "$OURMAIL_LOG_FORMAT"; fi
# exec: twistd is the process the container's stop signal (SIGTERM) reaches.
exec /opt/ourmail/bin/python3 /opt/ourmail/bin/twistd --nodaemon --pidfile= ourmail "$@"
