#!/usr/bin/env python3
"""A webhook receiver for the demo: accepts POSTs on 127.0.0.1:PORT, answers 204, appends
each JSON body to OUT (one per line) and drops repeats by idempotency key, as a receiver of
the operator's at-least-once notifications should.

usage: webhook-receiver.py PORT OUT
Only the Python standard library is used."""
import http.server
import json
import sys

seen = set()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()
        key = self.headers.get("idempotency-key", "")
        if key in seen:
            return
        seen.add(key)
        with open(sys.argv[2], "a") as out:
            out.write(json.dumps(json.loads(body)) + "\n")

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
