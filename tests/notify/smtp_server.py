"""A real SMTP server for the notification tests (aiosmtpd): STARTTLS required, AUTH
required (PLAIN/LOGIN over TLS), every accepted message appended as one JSON line to --out.

Faults, for the tests:
  - a recipient whose local part is "bounce" is refused with 550;
  - the first message from a sender whose local part is "drop" is cut: the connection is
    closed after the data arrives, before the reply (a server closing mid-message).
"""

import argparse
import asyncio
import json
import logging
import signal
import ssl
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out):
        self.out = out
        self.dropped = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0] == "bounce":
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        sender = envelope.mail_from or ""
        if sender.split("@")[0] == "drop" and sender not in self.dropped:
            self.dropped.add(sender)
            session.peer and print("dropping a message from %s mid-way" % sender, flush=True)
            server.transport.close()
            return "421 4.3.0 closing"
        record = {
            "mail_from": sender,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf8", errors="replace"),
            "tls": session.ssl is not None,
            "auth": session.authenticated,
            "at": time.time(),
        }
        with open(self.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print("accepted a message from %s to %s" % (sender, ",".join(envelope.rcpt_tos)), flush=True)
        return "250 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)
    return check


def main():
    # aiosmtpd 1.4 logs a warning about its own deprecated session attribute on every AUTH.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    controller = Controller(
        Handler(args.out),
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="localhost",
        tls_context=ctx,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator(args.user, args.password),
        ready_timeout=10,
    )
    controller.start()
    print("READY %d" % args.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    sys.exit(main())
