"""Self-signed certificates for the TLS tests, made with openssl."""

import subprocess
from pathlib import Path


def self_signed_certificate(folder: Path, *names: str) -> tuple[Path, Path]:
    """(certificate, key) for `names` (DNS names, or IP addresses), the first as the subject."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    alt_names = ",".join(
        f"IP:{name}" if name.replace(".", "").isdigit() else f"DNS:{name}" for name in names
    )
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={names[0]}",
            "-addext",
            f"subjectAltName={alt_names}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
