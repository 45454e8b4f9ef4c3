"""Optional TLS for the servers and for the internal channel, from PEM files."""

from dataclasses import dataclass
from pathlib import Path

import grpc

from shared.config import ConfigError, env_flag, env_optional


def _read(path: str, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ServerTls:
    certificate: bytes
    private_key: bytes

    @classmethod
    def from_env(cls) -> "ServerTls | None":
        """TLS_CERT_FILE and TLS_KEY_FILE together turn TLS on; neither keeps plaintext."""
        cert, key = env_optional("TLS_CERT_FILE"), env_optional("TLS_KEY_FILE")
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        return cls(_read(cert, "TLS_CERT_FILE"), _read(key, "TLS_KEY_FILE"))

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.certificate)])


@dataclass(frozen=True)
class ClientTls:
    root_certificates: bytes | None
    server_name: str | None

    @classmethod
    def from_env(cls) -> "ClientTls | None":
        """WALLET_POOL_TLS=1 (system roots) or WALLET_POOL_TLS_CA_FILE turns TLS on."""
        ca = env_optional("WALLET_POOL_TLS_CA_FILE")
        enabled = env_flag("WALLET_POOL_TLS")
        if ca is None and not enabled:
            return None
        return cls(
            _read(ca, "WALLET_POOL_TLS_CA_FILE") if ca else None,
            env_optional("WALLET_POOL_TLS_SERVER_NAME"),
        )

    @classmethod
    def for_health_check(cls) -> "ClientTls | None":
        """How `python -m shared.healthcheck` reaches a service: TLS when
        HEALTHCHECK_TLS_CA_FILE names the roots to trust, or else when TLS_CERT_FILE is set
        (the check runs beside the service with its environment, a container's health check,
        and trusts the certificate the service serves)."""
        for variable in ("HEALTHCHECK_TLS_CA_FILE", "TLS_CERT_FILE"):
            path = env_optional(variable)
            if path is not None:
                return cls(_read(path, variable), env_optional("HEALTHCHECK_TLS_SERVER_NAME"))
        return None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates)

    def options(self) -> list[tuple[str, str]]:
        """Channel options: the name to expect in the server's certificate, if given."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
