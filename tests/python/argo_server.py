"""A stand-in Argo Server for obsctl's tests: no Argo Server or Kubernetes can run on the test
machines. It serves exactly the endpoints `obsctl run --argo-server` uses, as
../shared/argo/swagger.json defines them:

  POST /api/v1/workflows/{namespace}              WorkflowCreateRequest -> Workflow
  GET  /api/v1/workflows/{namespace}/{name}       -> Workflow
  PUT  /api/v1/workflows/{namespace}/{name}/stop  WorkflowStopRequest -> Workflow
  GET  /api/v1/workflow-events/{namespace}        -> newline-delimited {"result": WorkflowWatchEvent}

Every request body is validated against the specification's schema for it, and every submitted
workflow against the official schema.json; errors are grpc-gateway `Error` bodies with the HTTP
status Argo maps their gRPC code to. A submitted workflow runs with obsctl's own executor
(`obsctl run --no-shim`, the instrumented command, `obsctl shim`, being the pod's command), so
node ids, phases, outputs and telemetry are real; only the shim's path inside the pod is
replaced by the obsctl under test.

With --tls-cert/--tls-key it serves https. Prints `listening 127.0.0.1:PORT` once ready; logs every request as a JSON line to --log.
"""

import argparse
import json
import os
import random
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from jsonschema import Draft4Validator, Draft202012Validator

SHIM_IN_POD = "/var/run/obsctl/obsctl"
FINISHED = ("Succeeded", "Failed", "Error")
# Only what Argo's NodeStatus has: the run record's own fields are left out.
NODE_FIELDS = (
    "id", "name", "displayName", "type", "templateName", "phase", "boundaryID", "children",
    "message", "startedAt", "finishedAt", "outputs",
)


class Store:
    """Workflows by name, each with its events; a condition wakes the watchers."""

    def __init__(self):
        self.cond = threading.Condition()
        self.workflows = {}
        self.events = {}
        self.children = {}
        self.version = 0

    def publish(self, name, kind, workflow):
        with self.cond:
            self.version += 1
            workflow["metadata"]["resourceVersion"] = str(self.version)
            self.workflows[name] = workflow
            self.events.setdefault(name, []).append((kind, json.loads(json.dumps(workflow))))
            self.cond.notify_all()


def spec_validator(swagger, definition):
    schema = {"$ref": f"#/definitions/{definition}", "definitions": swagger["definitions"]}
    return Draft4Validator(schema)


def workflow_validators(schema):
    workflow = dict(schema)
    workflow.pop("oneOf")
    workflow["$ref"] = "#/definitions/io.argoproj.workflow.v1alpha1.Workflow"
    return Draft202012Validator(workflow), Draft202012Validator(schema)


def errors_of(validator, doc):
    return [f"/{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def lint(workflow):
    """What Argo's validation refuses before creating a workflow, for the checks obsctl's tests
    need: an entrypoint or a step/task naming a template the workflow does not define."""
    spec = workflow.get("spec", {})
    names = {t.get("name") for t in spec.get("templates", [])}
    entry = spec.get("entrypoint")
    if entry not in names:
        return f"spec.entrypoint: template {entry!r} not found"
    for t in spec.get("templates", []):
        calls = [s for group in t.get("steps", []) or [] for s in group]
        calls += (t.get("dag") or {}).get("tasks", [])
        for call in calls:
            if "template" in call and call["template"] not in names:
                return (f"templates.{t['name']}.{'steps' if 'steps' in t else 'tasks'}"
                        f".{call.get('name')} template name '{call['template']}' undefined")
    return None


def replace_shim(value, obsctl):
    if isinstance(value, dict):
        return {k: replace_shim(v, obsctl) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_shim(v, obsctl) for v in value]
    return obsctl if value == SHIM_IN_POD else value


def argo_status(record):
    status = record.get("status", {})
    out = {k: status[k] for k in ("phase", "startedAt", "finishedAt", "message", "outputs")
           if status.get(k) is not None}
    out["nodes"] = {
        node_id: {k: node[k] for k in NODE_FIELDS if k in node}
        for node_id, node in status.get("nodes", {}).items()
    }
    return out


class StandIn:
    def __init__(self, args):
        self.args = args
        with open(args.swagger) as f:
            swagger = json.load(f)
        self.create_request = spec_validator(
            swagger, "io.argoproj.workflow.v1alpha1.WorkflowCreateRequest")
        self.stop_request = spec_validator(
            swagger, "io.argoproj.workflow.v1alpha1.WorkflowStopRequest")
        with open(args.schema) as f:
            self.workflow_shape, self.workflow_root = workflow_validators(json.load(f))
        self.store = Store()
        self.log_lock = threading.Lock()
        self.stream_lines = 0
        self.server = None
        # Between the outage and the listener closing, connections are dropped unanswered.
        self.down = False
        # With an outage planned, a workflow's final phase is published only once the server is
        # back, so the client is still watching when it goes away, however fast the run is.
        self.recovered = threading.Event()
        if not args.outage_after_lines:
            self.recovered.set()

    def log(self, entry):
        with self.log_lock, open(self.args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def create(self, namespace, body):
        problems = errors_of(self.create_request, body)
        workflow = body.get("workflow") or {}
        problems += errors_of(self.workflow_shape, workflow)
        if not problems and not self.workflow_root.is_valid(workflow):
            problems.append("not valid against the schema's root (oneOf)")
        if problems:
            return 400, {"code": 3, "message": "; ".join(problems)}
        if body.get("namespace") not in (None, namespace):
            return 400, {"code": 3, "message": "namespace in the body differs from the path"}
        problem = lint(workflow)
        if problem:
            return 400, {"code": 3, "message": problem}
        meta = workflow.setdefault("metadata", {})
        name = meta.get("name") or meta.pop("generateName", "workflow-") + "".join(
            random.choices(string.ascii_lowercase + string.digits, k=5))
        meta.update(name=name, namespace=namespace, uid=str(uuid.uuid4()),
                    creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        meta.pop("generateName", None)
        workflow["status"] = {}
        self.store.publish(name, "ADDED", workflow)
        self.start(name, namespace, workflow)
        return 200, workflow

    def start(self, name, namespace, workflow):
        work = os.path.join(self.args.state, name)
        os.makedirs(work)
        file = os.path.join(work, "workflow.json")
        local = replace_shim({k: v for k, v in workflow.items() if k != "status"},
                             self.args.obsctl)
        # What the API server adds to metadata is not part of the workflow the executor reads.
        local["metadata"] = {k: v for k, v in local["metadata"].items()
                             if k in ("name", "namespace", "labels", "annotations")}
        with open(file, "w") as f:
            json.dump(local, f)
        runs = os.path.join(work, "runs")
        with open(os.path.join(work, "stderr"), "w") as stderr:
            child = subprocess.Popen(
                [self.args.obsctl, "run", file, "--no-shim", "--namespace", namespace,
                 "--state-dir", runs, "--otlp-endpoint", self.args.dead_endpoint, "-o", "json"],
                stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "XDG_STATE_HOME": work})
        self.store.children[name] = child
        threading.Thread(target=self.follow, args=(name, runs, child), daemon=True).start()

    def follow(self, name, runs, child):
        """Publishes each new state of the executor's run record as a MODIFIED event."""
        path = os.path.join(runs, f"{name}.json")
        last = None
        while True:
            exited = child.poll() is not None
            try:
                with open(path) as f:
                    text = f.read()
                status = argo_status(json.loads(text))
            except (OSError, ValueError):
                status = None
            if status is not None and status != last:
                if status.get("phase") in FINISHED:
                    self.recovered.wait()
                last = status
                with self.store.cond:
                    workflow = json.loads(json.dumps(self.store.workflows[name]))
                workflow["status"] = status
                self.store.publish(name, "MODIFIED", workflow)
            if exited:
                if last is None or last.get("phase") not in FINISHED:
                    self.recovered.wait()
                    with self.store.cond:
                        workflow = json.loads(json.dumps(self.store.workflows[name]))
                    workflow["status"] = {**(last or {}), "phase": "Error",
                                          "message": f"executor exited {child.returncode}"}
                    self.store.publish(name, "MODIFIED", workflow)
                return
            time.sleep(0.05)

    def stop(self, namespace, name, body):
        problems = errors_of(self.stop_request, body)
        if problems:
            return 400, {"code": 3, "message": "; ".join(problems)}
        with self.store.cond:
            workflow = self.store.workflows.get(name)
        if workflow is None or workflow["metadata"]["namespace"] != namespace:
            return 404, {"code": 5, "message": f'workflows.argoproj.io "{name}" not found'}
        child = self.store.children[name]
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
        return 200, workflow

    def serve(self, port):
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(self))
        self.server.daemon_threads = True
        # A refused handshake is the client's verdict, not the stand-in's failure.
        self.server.handle_error = lambda *_: None
        if self.args.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.args.tls_cert, self.args.tls_key)
            self.server.socket = ctx.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def go_away(self):
        """The server disappears (connections refused) and comes back on the same port."""
        server = self.server
        self.down = True
        self.log({"event": "outage"})
        server.shutdown()
        server.server_close()
        time.sleep(self.args.outage_seconds)
        self.down = False
        self.serve(server.server_address[1])
        self.log({"event": "back"})
        self.recovered.set()


def handler_for(standin):
    args = standin.args

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            if status != 200:
                body = {"code": body["code"], "message": body["message"],
                        "error": body["message"], "details": []}
                data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def access(self, write):
            """401 without the token, 403 when the read-only token asks to change something."""
            auth = self.headers.get("Authorization")
            if auth == f"Bearer {args.token}":
                return True
            if auth == f"Bearer {args.read_only_token}" and not write:
                return True
            if auth == f"Bearer {args.read_only_token}":
                self.reply(403, {"code": 7, "message":
                                 'workflows.argoproj.io is forbidden: User '
                                 '"system:serviceaccount:argo:ci-read-only" cannot '
                                 'create resource "workflows"'})
            else:
                self.reply(401, {"code": 16, "message": "token not valid"})
            return False

        def route(self, method):
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if standin.down:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            standin.log({"method": method, "path": url.path, "query": url.query,
                         "authorized": self.headers.get("Authorization") is not None})
            if not self.access(write=method != "GET"):
                return
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as e:
                return self.reply(400, {"code": 3, "message": f"body is not JSON: {e}"})
            if len(parts) >= 4 and parts[3] not in args.namespace:
                return self.reply(404, {"code": 5, "message": f'namespaces "{parts[3]}" not found'})
            if method == "POST" and parts[:3] == ["api", "v1", "workflows"] and len(parts) == 4:
                return self.reply(*standin.create(parts[3], body))
            if method == "GET" and parts[:3] == ["api", "v1", "workflows"] and len(parts) == 5:
                with standin.store.cond:
                    wf = standin.store.workflows.get(parts[4])
                if wf is None:
                    return self.reply(404, {"code": 5, "message":
                                            f'workflows.argoproj.io "{parts[4]}" not found'})
                return self.reply(200, wf)
            if method == "PUT" and parts[:3] == ["api", "v1", "workflows"] and parts[5:] == ["stop"]:
                return self.reply(*standin.stop(parts[3], parts[4], body))
            if method == "GET" and parts[:3] == ["api", "v1", "workflow-events"] and len(parts) == 4:
                return self.watch(parse_qs(url.query))
            return self.reply(404, {"code": 5, "message": f"no route {method} {url.path}"})

        def chunk(self, data):
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def watch(self, query):
            try:
                self.stream(query)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away, as watchers do

        def stream(self, query):
            selector = query.get("listOptions.fieldSelector", [""])[0]
            name = selector.removeprefix("metadata.name=")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            store = standin.store
            # A watch without a resourceVersion starts with the current state, as ADDED.
            with store.cond:
                current = store.workflows.get(name)
                sent = len(store.events.get(name, []))
            pending = [("ADDED", current)] if current else []
            deadline = time.time() + 120
            while time.time() < deadline:
                for kind, wf in pending:
                    self.chunk(json.dumps({"result": {"type": kind, "object": wf}}).encode()
                               + b"\n")
                    standin.stream_lines += 1
                    if standin.stream_lines == args.outage_after_lines:
                        # The connection drops with the server: no chunk terminator.
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        threading.Thread(target=standin.go_away, daemon=True).start()
                        return
                with store.cond:
                    store.cond.wait_for(lambda: len(store.events.get(name, [])) > sent, 1.0)
                    events = store.events.get(name, [])
                    pending, sent = events[sent:], len(events)
            self.chunk(b"")

        def do_GET(self):
            self.route("GET")

        def do_POST(self):
            self.route("POST")

        def do_PUT(self):
            self.route("PUT")

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--obsctl", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--swagger", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--read-only-token", required=True)
    p.add_argument("--namespace", action="append", required=True)
    p.add_argument("--dead-endpoint", required=True)
    p.add_argument("--outage-after-lines", type=int, default=0)
    p.add_argument("--outage-seconds", type=float, default=1.0)
    p.add_argument("--tls-cert", help="serve https with this PEM certificate (and --tls-key)")
    p.add_argument("--tls-key")
    args = p.parse_args()
    standin = StandIn(args)
    port = standin.serve(0)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"listening 127.0.0.1:{port}", flush=True)
    try:
        done.wait()
    finally:
        for child in standin.store.children.values():
            if child.poll() is None:
                child.kill()
                child.wait()


if __name__ == "__main__":
    sys.exit(main())
