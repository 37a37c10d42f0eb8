"""A throw-away RFC 3161 time-stamping authority for tests: certificates made here, replies by ``openssl ts -reply``.

    local = LocalTSA.create(tmp_path / "tsa")   # its own self-signed root + a TSA certificate
    reply = local.reply(query_der)               # "by file": no network at all
    with local.serve() as url:                   # HTTP on 127.0.0.1:<free port>
        token = request_timestamp(url, digest)

Each LocalTSA has its own root, so two of them are two unrelated trust domains. Certificates
are made with ``cryptography`` because openssl 3.0's ``req``/``x509`` cannot set exact validity
dates; ``openssl ts -reply`` does the signing, as a real TSA's software would.
"""
from __future__ import annotations

import contextlib
import http.server
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CONFIG = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
serial = {dir}/tsaserial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
signer_key = {dir}/tsa.key
{certs}
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1.1
digests = sha256, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_alg = sha256
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "backmark tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(**on) -> x509.KeyUsage:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def make_certificate(cn: str, issuer: tuple | None, *, ca: bool, not_before: datetime, not_after: datetime):
    """(key, certificate): a root (``issuer=None``: self-signed, CA) or a TSA certificate signed by
    ``issuer = (issuer_key, issuer_certificate)`` with the critical timeStamping EKU RFC 3161 asks."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key, issuer_name = (key, _name(cn)) if issuer is None else (issuer[0], issuer[1].subject)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False))
    if ca:
        b = b.add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
    else:
        b = b.add_extension(_usage(digital_signature=True, content_commitment=True), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    return key, b.sign(signer_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class LocalTSA:
    directory: Path
    root_pem: Path  # the trust anchor a verifier would hold
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, directory: Path, *, name: str = "Test TSA", embed_root: bool = True,
               issuer: tuple | None = None) -> "LocalTSA":
        """A root CA and a TSA certificate signed by it (or by ``issuer = (key, cert)``, to make a
        TSA that chains to another TSA's root), and the ``openssl ts`` configuration."""
        if shutil.which("openssl") is None:
            raise RuntimeError("the tests' local TSA needs the openssl executable (Debian package openssl)")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc)
        root = issuer or make_certificate(f"{name} Root CA", None, ca=True, not_before=now - timedelta(days=1),
                                          not_after=now + timedelta(days=3650))
        tsa_key, tsa = make_certificate(name, root, ca=False, not_before=now - timedelta(minutes=5),
                                        not_after=now + timedelta(days=3650))
        (d / "root.pem").write_bytes(_pem(root[1]))
        (d / "tsa.pem").write_bytes(_pem(tsa))
        (d / "tsa.key").write_bytes(tsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        (d / "tsaserial").write_text("01\n")
        (d / "ts.cnf").write_text(_CONFIG.format(dir=d, certs=f"certs = {d}/root.pem" if embed_root else ""))
        local = cls(d, d / "root.pem")
        local.root = root  # (key, certificate): lets a test make a second TSA under the same root
        return local

    def reply(self, query_der: bytes) -> bytes:
        """A DER TimeStampResp for a DER TimeStampReq, by ``openssl ts -reply`` (serialised:
        openssl rewrites the serial file)."""
        with self._lock, tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
            q.write_bytes(query_der)
            proc = subprocess.run(["openssl", "ts", "-reply", "-config", str(self.directory / "ts.cnf"), "-queryfile", str(q),
                                   "-out", str(r)], capture_output=True, check=False, timeout=30)
            if proc.returncode != 0:
                raise RuntimeError(f"openssl ts -reply failed: {proc.stderr.decode(errors='replace').strip()[-200:]}")
            return r.read_bytes()

    @contextlib.contextmanager
    def serve(self, hook=None):
        """``http://127.0.0.1:<port>/`` answering POSTed queries while in the block;
        ``hook(query, reply) -> bytes`` lets a test garble or replay replies."""
        tsa = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (stdlib naming)
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Content-Type") != "application/timestamp-query" or not 0 < length <= 65536:
                    return self._answer(415, b"expected a timestamp query", "text/plain")
                query = self.rfile.read(length)
                body = tsa.reply(query)
                self._answer(200, hook(query, body) if hook else body, "application/timestamp-reply")

            def _answer(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
