"""A throw-away certificate authority (openssl) for the emulated cluster's OVSDB and OpenFlow over
TLS, made as the provisioning playbook makes them for real Pis."""

from __future__ import annotations

from pathlib import Path

from topology.effects import proc


def make_ca(cert: Path, key: Path, name: str) -> None:
    proc.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", f"/CN={name}",
              "-keyout", str(key), "-out", str(cert)])


def issue_certificate(ca: Path, ca_key: Path, cert: Path, key: Path, name: str) -> None:
    csr = cert.with_suffix(".csr")
    proc.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key),
              "-out", str(csr)])
    proc.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
              "-CAcreateserial", "-days", "30", "-out", str(cert)])
    csr.unlink()
