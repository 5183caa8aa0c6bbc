"""A small Lambda service for tests: the Invoke API in front of real function
binaries, each run as Lambda runs a custom runtime (`bootstrap` polling the
Runtime API).

- `POST /host/functions/{name}` registers a function:
  {"command": [path, ...], "env": {...}, "timeoutSeconds": 30}.
- `POST /2015-03-31/functions/{name-or-arn}/invocations` invokes it, as
  Lambda's Invoke API does: 200 with the payload, or 200 with
  `X-Amz-Function-Error: Unhandled` and the function's error
  ({"errorType", "errorMessage"}) when the handler failed, the process died
  (`Runtime.ExitError`) or the invocation ran out of time (`Sandbox.Timedout`).
- `POST /host/faults/{name}` {"crash": "before"|"after", "times": n}: the next
  n invocations crash the function's process, before the event reaches the
  handler or after the handler answered (its side effects done): what a
  Lambda timeout or out-of-memory does to a caller.
- `GET /host/functions/{name}` tells how many invocations the function had.

Each function gets its own Runtime API port and one process (one execution
environment, as with reserved concurrency 1); a new process starts after a
crash. Invocations of one function are served one at a time.

Usage: python lambda_host.py -p PORT (127.0.0.1 only).
"""

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")


class QuietServer(ThreadingHTTPServer):
    """A killed function's connections reset; that is expected here."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class Invocation:
    def __init__(self, payload: bytes):
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.done = threading.Event()
        self.result = None  # (ok, body bytes)


class Function:
    def __init__(self, name, command, env, timeout, stderr=None):
        self.name = name
        self.stderr = stderr  # a file for the function's own log (default: ours)
        self.command = command
        self.env = env
        self.timeout = timeout
        self.lock = threading.Lock()  # one invocation at a time
        self.pending = queue.Queue()
        self.current = None
        self.process = None
        self.faults = []  # "before" / "after", consumed in order
        self.invocations = 0
        self.generation = 0
        self.nexts = 0  # `next` requests: the first one ends the init
        self.before_first_next = []  # requests other than `next` made during the init
        self.server = QuietServer(("127.0.0.1", 0), runtime_handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def runtime_api(self):
        return f"127.0.0.1:{self.server.server_address[1]}"

    def ensure_process(self):
        if self.process is not None and self.process.poll() is None:
            return
        env = dict(os.environ)
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": self.runtime_api(),
                "AWS_LAMBDA_FUNCTION_NAME": self.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
                "AWS_LAMBDA_LOG_FORMAT": "JSON",
                "_HANDLER": "bootstrap",
            }
        )
        env.update(self.env)
        self.process = subprocess.Popen(
            self.command, env=env, stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr
        )

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None
        # An invocation the dead process never took dies with it (invocations
        # are served one at a time, so nothing else is queued).
        while True:
            try:
                self.pending.get_nowait()
            except queue.Empty:
                break
        # Wake the dead process's waiting `next` so it cannot take the next
        # invocation (see Runtime.do_GET).
        self.generation += 1
        self.pending.put(None)

    def invoke(self, payload: bytes):
        with self.lock:
            self.invocations += 1
            fault = self.faults.pop(0) if self.faults else None
            if fault == "before":
                return self.crashed("Runtime.ExitError", "Runtime exited with error: signal: killed (before the handler ran)")
            self.ensure_process()
            inv = Invocation(payload)
            self.current = inv
            self.pending.put(inv)
            finished = self.wait_for(inv)
            self.current = None
            if finished is None:
                code = self.process.returncode if self.process else None
                self.kill()
                return self.crashed("Runtime.ExitError", f"Runtime exited with error: exit status {code}")
            if not finished:
                self.kill()
                return self.crashed("Sandbox.Timedout", f"Task timed out after {self.timeout:.2f} seconds")
            if fault == "after":
                self.kill()
                return self.crashed("Runtime.ExitError", "Runtime exited with error: signal: killed (after the handler answered)")
            return inv.result

    def wait_for(self, inv):
        """True when answered, False at the timeout, None if the process died first."""
        deadline = time.monotonic() + self.timeout
        while not inv.done.wait(0.05):
            if self.process is not None and self.process.poll() is not None and not inv.done.is_set():
                return None
            if time.monotonic() >= deadline:
                return False
        return True

    def crashed(self, error_type, message):
        body = {"errorType": error_type, "errorMessage": f"RequestId: {uuid.uuid4()} Error: {message}"}
        return (False, json.dumps(body).encode())


def runtime_handler(fn: Function):
    class Runtime(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body=b"", headers=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if not self.path.endswith("/runtime/invocation/next"):
                if fn.nexts == 0:
                    fn.before_first_next.append(f"GET {self.path}")
                return self.reply(404)
            fn.nexts += 1
            generation = fn.generation
            while True:
                inv = fn.pending.get()
                if inv is not None:
                    break
                if generation != fn.generation:
                    # This request came from a process that was killed since.
                    return self.reply(410)
            deadline = int((time.time() + fn.timeout) * 1000)
            self.reply(
                200,
                inv.payload,
                {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": inv.id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline),
                    "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:us-east-1:123456789012:function:{fn.name}",
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
                },
            )

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            m = re.search(r"/runtime/invocation/([^/]+)/(response|error)$", self.path)
            inv = fn.current
            if m and inv is not None and inv.id == m.group(1):
                inv.result = (m.group(2) == "response", body)
                inv.done.set()
                return self.reply(202, b'{"status":"OK"}')
            if self.path.endswith("/runtime/init/error"):
                sys.stderr.write(f"{fn.name}: init error: {body.decode(errors='replace')}\n")
                return self.reply(202, b'{"status":"OK"}')
            if fn.nexts == 0:
                fn.before_first_next.append(f"POST {self.path}")
            return self.reply(400, b'{"errorMessage":"unknown request id"}')

    return Runtime


FUNCTIONS = {}
FUNCTIONS_LOCK = threading.Lock()


def function_named(raw):
    # A name, a partial ARN or a full ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]).
    name = raw
    if ":function:" in raw:
        name = raw.split(":function:", 1)[1].split(":", 1)[0]
    with FUNCTIONS_LOCK:
        return FUNCTIONS.get(name)


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if self.path == "/host/ping":
            return self.reply(200, b"{}")
        m = re.match(r"^/host/functions/([^/]+)$", self.path)
        if m:
            fn = function_named(m.group(1))
            if fn is None:
                return self.reply(404, b"{}")
            return self.reply(200, json.dumps({"invocations": fn.invocations}).encode())
        self.reply(404, b"{}")

    def do_POST(self):
        from urllib.parse import unquote

        path = unquote(self.path.split("?", 1)[0])
        data = self.body()
        m = re.match(r"^/host/functions/([^/]+)$", path)
        if m:
            spec = json.loads(data)
            fn = Function(m.group(1), spec["command"], spec.get("env", {}), float(spec.get("timeoutSeconds", 30)))
            with FUNCTIONS_LOCK:
                old = FUNCTIONS.pop(fn.name, None)
                FUNCTIONS[fn.name] = fn
            if old is not None:
                old.kill()
            return self.reply(200, json.dumps({"runtimeApi": fn.runtime_api()}).encode())
        m = re.match(r"^/host/faults/([^/]+)$", path)
        if m:
            fn = function_named(m.group(1))
            if fn is None:
                return self.reply(404, b"{}")
            spec = json.loads(data)
            fn.faults.extend([spec["crash"]] * int(spec.get("times", 1)))
            return self.reply(200, b"{}")
        m = INVOKE.match(path)
        if m:
            fn = function_named(m.group(1))
            if fn is None:
                body = {"Type": "User", "message": f"Function not found: {m.group(1)}"}
                return self.reply(404, json.dumps(body).encode(), {"x-amzn-ErrorType": "ResourceNotFoundException"})
            ok, payload = fn.invoke(data)
            headers = {"X-Amz-Executed-Version": "$LATEST"}
            if not ok:
                headers["X-Amz-Function-Error"] = "Unhandled"
            return self.reply(200, payload, headers)
        self.reply(404, b"{}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    server = QuietServer(("127.0.0.1", args.port), Api)
    server.daemon_threads = True

    def stop(*_):
        with FUNCTIONS_LOCK:
            for fn in FUNCTIONS.values():
                fn.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
