#!/bin/sh
# meao gateway as a plain CGI program, for hosts that offer only CGI (shared
# hosting): the web server runs this once per request; meao-fcgi sees
# GATEWAY_INTERFACE, answers the one request in its environment on stdout and
# exits. Copy it next to your other CGI scripts (e.g. ~/public_html/cgi-bin/),
# make it executable, and point the two paths below at your copy of the
# binary and your configuration (see deploy/cgi/README.md).
#
# Only the REST API and the probes work this way: no WebSocket (that needs
# websocketd), and message turns only if meao-orchestrator runs somewhere this
# host can reach over a unix socket. Run `meaoctl -c CONF init` once from a
# shell first (CGI processes never migrate the database).
MEAO_BIN="${MEAO_BIN:-$HOME/meao/bin/meao-fcgi}"
MEAO_CONF="${MEAO_CONF:-$HOME/meao/meao.conf}"
exec "$MEAO_BIN" -c "$MEAO_CONF"
