"""
jwt_helpers.py - building JWTs by hand for the auth tests: base64url JSON
segments, HS256 with hmac, RS256/ES256 with the openssl CLI (keys generated
per test run into a scratch directory). ES256 signatures are converted from
openssl's DER to the JOSE form (r || s, 32 bytes each). No third-party
Python packages.
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import tempfile
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj):
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(sub="user-1", ttl=300, **extra):
    now = int(time.time())
    c = {"sub": sub, "iat": now, "exp": now + ttl}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def hs256(payload, secret, header=None):
    h = header or {"alg": "HS256", "typ": "JWT"}
    signing = f"{segment(h)}.{segment(payload)}"
    sig = hmac.new(secret.encode() if isinstance(secret, str) else secret, signing.encode(),
                   hashlib.sha256).digest()
    return f"{signing}.{b64url(sig)}"


def unsigned(payload):
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."


def _der_to_jose(der, size=32):
    # SEQUENCE { INTEGER r, INTEGER s }
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(size, b"\x00")
        i += 2 + n
    return out


class KeyPair:
    """An RSA (RS256) or EC P-256 (ES256) key pair made with openssl."""

    def __init__(self, kind, directory=None):
        self.kind = kind
        self.dir = directory or tempfile.mkdtemp(prefix=f"jwtkeys-{kind}-")
        os.makedirs(self.dir, exist_ok=True)
        self.private = os.path.join(self.dir, f"{kind}.key")
        self.public = os.path.join(self.dir, f"{kind}.pub.pem")
        if kind == "rsa":
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                            "rsa_keygen_bits:2048", "-out", self.private], check=True,
                           capture_output=True)
        else:
            subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-out", self.private], check=True,
                           capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", self.private, "-pubout", "-out", self.public],
                       check=True, capture_output=True)

    @property
    def alg(self):
        return "RS256" if self.kind == "rsa" else "ES256"

    def public_pem(self):
        with open(self.public) as f:
            return f.read()

    def sign(self, payload, header=None):
        h = header or {"alg": self.alg, "typ": "JWT"}
        signing = f"{segment(h)}.{segment(payload)}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.private],
                             input=signing.encode(), check=True, capture_output=True).stdout
        if self.kind == "ec":
            sig = _der_to_jose(sig)
        return f"{signing}.{b64url(sig)}"


def key_file(path, keys):
    """Writes an API_KEYS_FILE ({"keys": keys}) at path; returns path."""
    with open(path, "w") as f:
        json.dump({"keys": keys}, f)
    return path


def bearer(token):
    return {"Authorization": f"Bearer {token}"}
