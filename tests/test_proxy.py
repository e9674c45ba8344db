"""Behind a reverse proxy: the forwarded scheme, host and client address are believed only with
CHATTERBOX_PROXY_HOPS, and deploy/nginx/chatterbox.conf, run by a real nginx with TLS in front of a real system,
carries REST, websockets and streamed audio."""
from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import pytest
import requests
import websocket

from chatterbox.audio import decode
from tests.conftest import ROOT, System, free_port, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tts.example.org"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """A system behind one proxy hop, whose client addresses may fail to authenticate 3 times a minute."""
    sys_ = System(tmp_path_factory.mktemp("edge"))
    sys_.env.update(CHATTERBOX_PROXY_HOPS="1", CHATTERBOX_AUTH_FAILURES_PER_MINUTE="3")
    sys_.start()
    yield sys_
    sys_.stop()


def open_socket(system: System, job_id: str, **kwargs):
    return websocket.create_connection(f"{system.ws_url}/ws/jobs/{job_id}", timeout=30,
                                       header=[f"Authorization: Bearer {system.api_key}",
                                               *(f"{k}: {v}" for k, v in FORWARDED.items())], **kwargs)


def test_the_public_https_origin_is_the_apps_own_behind_a_trusted_proxy(edge, live):
    job = edge.submit("Behind the proxy.")
    conn = open_socket(edge, job["job_id"], origin="https://tts.example.org")
    assert '"type"' in conn.recv()
    conn.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as foreign:
        open_socket(edge, job["job_id"], origin="https://evil.example")
    assert foreign.value.status_code == 403
    # Without CHATTERBOX_PROXY_HOPS the same headers are anybody's words: not believed.
    other = live.submit("Not behind a proxy.")
    with pytest.raises(websocket.WebSocketBadStatusException) as unbelieved:
        open_socket(live, other["job_id"], origin="https://tts.example.org")
    assert unbelieved.value.status_code == 403
    edge.wait_job(job["job_id"])
    live.wait_job(other["job_id"])


def test_failed_authentications_are_counted_per_forwarded_client(edge):
    def get(client: str, token: str | None = None):
        headers = {"X-Forwarded-For": client, "Authorization": f"Bearer {token or edge.api_key}"}
        return requests.get(edge.url + "/jobs", headers=headers, timeout=10)

    assert [get("203.0.113.5", f"wrong-{i}").status_code for i in range(3)] == [401] * 3
    assert get("203.0.113.5").status_code == 429
    assert get("203.0.113.6").status_code == 200  # another client, through the same proxy


# -- deploy/nginx/chatterbox.conf, for real --------------------------------------------------------------------------

def nginx_conf() -> str:
    return (ROOT / "deploy" / "nginx" / "chatterbox.conf").read_text()


@pytest.fixture(scope="module")
def nginx(edge, tmp_path_factory):
    if not os.path.exists(NGINX):
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; `make test` installs it (apt-get install nginx)")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the test's own self-signed certificate
    folder: Path = tmp_path_factory.mktemp("nginx")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port, plain = free_port(), free_port()
    block = (nginx_conf()
             .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
             .replace("listen 80;", f"listen 127.0.0.1:{plain};")
             .replace("return 301 https://$host$request_uri;", f"return 301 https://$host:{port}$request_uri;")
             .replace("tts.example.org.pem", "x").replace("/etc/ssl/certs/x", str(cert))
             .replace("/etc/ssl/private/tts.example.org.key", str(key))
             .replace("server_name tts.example.org;", "server_name localhost;")
             .replace("http://127.0.0.1:5000", f"http://127.0.0.1:{edge.web_port}"))
    assert str(cert) in block and str(key) in block and str(edge.web_port) in block
    temp = "\n".join(f"  {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                         "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\n"
                                       f"error_log {folder / 'error.log'};\nevents {{}}\nhttp {{\n"
                                       f"  access_log {folder / 'access.log'};\n{temp}\n{block}\n}}\n")
    proc = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"https://localhost:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {proc.stderr.read().decode()}")
        try:
            return requests.get(base + "/health", verify=False, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, 30, 0.1, "nginx")
    redirect = requests.get(f"http://localhost:{plain}/health", allow_redirects=False, timeout=5)
    assert redirect.status_code == 301 and redirect.headers["Location"] == base + "/health"
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


def test_the_nginx_config_carries_rest_websockets_and_streamed_audio(edge, nginx):
    auth = {"Authorization": f"Bearer {edge.api_key}"}
    sent = requests.post(nginx + "/synthesize", json={"text": "Through nginx. Over TLS."}, headers=auth, verify=False,
                         timeout=30)
    assert sent.status_code == 202, sent.text
    job = sent.json()
    # A browser on the public origin follows the job over wss://: the origin check passes, every event arrives.
    conn = websocket.create_connection(nginx.replace("https://", "wss://") + job["events_url"], timeout=60,
                                       header=[f"Authorization: Bearer {edge.api_key}"], origin=nginx,
                                       sslopt={"cert_reqs": ssl.CERT_NONE})
    events = []
    try:
        while not events or events[-1]["type"] not in ("done", "error"):
            events.append(json.loads(conn.recv()))
    finally:
        conn.close()
    assert events[-1]["type"] == "done" and any(e["type"] == "chunk" for e in events)
    audio = requests.get(nginx + job["audio_url"], headers=auth, verify=False, timeout=30)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    # Streamed speech (chunked, through proxy_buffering off) arrives whole.
    reply = requests.post(nginx + "/v1/audio/speech", headers=auth, verify=False, timeout=60, json={
        "model": "tts-1", "voice": "alloy", "response_format": "mp3", "input": "Sentence one. Sentence two."})
    assert reply.status_code == 200 and reply.headers["Transfer-Encoding"] == "chunked"
    samples, rate = decode(reply.content)
    assert len(samples) / rate > 1.0
