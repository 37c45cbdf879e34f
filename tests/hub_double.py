"""A local stand-in for the Hugging Face Hub's HTTP API: just the calls an upload of a dataset folder
makes (create the repository, validate the card's YAML, ask how to upload each file, commit them),
answered as the Hub answers them, with every uploaded file kept for the test to compare."""

import base64
import json
from http.server import BaseHTTPRequestHandler

import yaml
from loopback import LoopbackServer


class HubDouble(LoopbackServer):
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.repos: list[dict] = []
        self.calls: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.calls.append(("GET", self.path))
                self._reply(404, {"error": f"{self.path}: not served by this double"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.calls.append(("POST", self.path))
                if self.headers.get("Authorization", "") != "Bearer hf_test_token":
                    return self._reply(401, {"error": "Invalid credentials"})
                if self.path == "/api/repos/create":
                    request = json.loads(body)
                    hub.repos.append(request)
                    return self._reply(200, {"url": f"{hub.url}/datasets/{request['organization']}/{request['name']}"})
                if self.path == "/api/validate-yaml":
                    try:  # the card's header must be YAML, as the Hub insists
                        yaml.safe_load(json.loads(body)["content"].split("---")[1])
                    except Exception as err:
                        return self._reply(400, {"error": f"invalid YAML: {err}"})
                    return self._reply(200, {"errors": [], "warnings": []})
                if "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                       for f in files], "commitOid": "0" * 40})
                if "/commit/" in self.path:
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            hub.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    repo = self.path.split("/api/datasets/")[1].split("/commit/")[0]
                    return self._reply(200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{'1' * 40}",
                                             "commitOid": "1" * 40, "success": True})
                self._reply(404, {"error": f"{self.path}: not served by this double"})

        super().__init__(Handler)
        self.url = self.root_url
