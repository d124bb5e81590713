"""A peer library in its own venv, driven over JSON lines: one request per line on its stdin, one reply per line
on its stdout, its stderr to a log file. Shared by the peer benchmarks (sac.py: rejax; refactor_pyg.py: PyG)."""

from __future__ import annotations

import json
import subprocess


class PeerWorker:
    def __init__(self, argv: list[str], cwd, log_path: str, name: str):
        self.name, self.log_path, self.log = name, log_path, open(log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)

    def call(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited (status {self.proc.poll()}); its log: {self.log_path}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()
