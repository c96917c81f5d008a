"""A stand-in generation server for launcher tests: answers GET /health, and forks a worker (as vLLM does).

``python health_server.py MODEL PORT PIDFILE``: writes its own and its worker's pid to PIDFILE.
"""

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

model, port, pidfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
worker = os.fork()
if worker == 0:  # the "engine worker": only a stop of the whole process group ends it
    while True:
        time.sleep(1)


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


with open(pidfile, "w") as f:
    f.write(f"{os.getpid()} {worker}")
print(f"serving {model}", flush=True)
HTTPServer(("127.0.0.1", port), Health).serve_forever()
